"""Image summaries for TensorBoard: ground truth next to 1-click predictions."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.inference.visualize import overlay_masks, side_by_side
from samjax.model.prompts import Prompts
from samjax.train.step import normalize_images


def _center_click(mask: np.ndarray) -> tuple[float, float]:
  """The foreground pixel closest to the mask's centre of mass (x, y) at G."""
  ys, xs = np.nonzero(mask)
  cy, cx = ys.mean(), xs.mean()
  i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
  return float(xs[i]) + 0.5, float(ys[i]) + 0.5


@functools.partial(jax.jit, static_argnums=0)
def _one_click_forward(model, params, image, image_size, clicks):
  """Low-res logits [1, M, 3, g, g] and IoU [1, M, 3] for one click per mask.

  image [1, S, S, 3] uint8, image_size [1, 2], clicks [1, M, 1, 2] (x, y)
  at S. Jitted: run eagerly, the model would compile each of its hundreds
  of ops separately (minutes on a CPU, at every evaluation).
  """
  # One image on host: no sharding constraints (a batch of 1 does not split).
  with nn.logical_axis_rules(()):
    emb = model.embed_images(params, normalize_images(image, image_size))
    return model.decode(params, emb, Prompts.create(clicks, jnp.ones(clicks.shape[:3], jnp.int32)))


def prediction_panel(model, params, batch, index: int = 0, max_masks: int = 3):
  """One held-out image: GT masks | the model's best mask for one click each.

  Args:
    batch: host numpy batch from the pipeline (image [B, S, S, 3], masks
      [B, K, G, G], valid [B, K], image_size [B, 2]).
  Returns:
    [h, 2w, 3] uint8 (h, w = the resized image size), or None without masks.
  """
  valid = np.flatnonzero(batch["valid"][index])[:max_masks]
  if len(valid) == 0:
    return None
  s, g = model.config.image_size, batch["masks"].shape[-1]
  h, w = (int(v) for v in batch["image_size"][index])
  image = np.asarray(batch["image"][index])
  gt = np.asarray(batch["masks"][index][valid]).astype(bool)
  clicks = np.array([_center_click(m) for m in gt]) * (s / g)
  hw = batch["image_size"][index:index + 1]
  logits, iou = _one_click_forward(model, params, image[None], hw,
                                   clicks[None, :, None, :].astype(np.float32))
  logits, iou = jax.device_get((logits[0], iou[0]))
  best = logits[np.arange(len(valid)), np.argmax(iou, axis=-1)] > 0
  up = lambda m: np.kron(m, np.ones((s // g, s // g), bool))[:, :h, :w]
  view = image[:h, :w]
  labels = np.ones(len(valid))
  left = overlay_masks(view, list(up(gt)), points=clicks, labels=labels, captions=["GT"])
  right = overlay_masks(view, list(up(best)), points=clicks, labels=labels,
                        captions=["1 click"])
  return np.asarray(side_by_side([left, right]))

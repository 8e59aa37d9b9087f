"""``Sam``: the official model object's interface over a ``samjax.LoadedSam``.

What official code touches on the model: ``.to(device)``, ``.device``,
``.eval()``, ``image_encoder.img_size``, ``mask_threshold``,
``image_format``, ``pixel_mean``/``pixel_std``, ``preprocess``,
``postprocess_masks`` and ``sam(batched_input, multimask_output)``. The
weights stay a JAX pytree; torch only appears at the inputs and outputs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from samjax.decoding.interactive import InteractivePlan
from samjax.inference import validation
from samjax.inference.predictor import PROMPT_CHUNK, decode_prompts
from samjax.inference.transforms import normalize_and_pad_host, postprocess_masks
from samjax.loading import LoadedSam
from samjax.model.configs import PIXEL_MEAN, PIXEL_STD
from samjax.segment_anything import tensors


class ImageEncoder:
  """``sam.image_encoder``: ``img_size`` and the embedding of preprocessed images."""

  def __init__(self, sam: Sam):
    self._sam = sam
    self.img_size = sam.loaded.image_size

  def __call__(self, x):
    """[B, 3, S, S] normalised, padded images (``sam.preprocess``) -> [B, C, h, w]."""
    emb = self._sam._embed(self._sam.loaded.params, tensors.to_numpy(x, np.float32))
    return tensors.to_output(np.asarray(emb), self._sam.device)


class Sam:
  """Official ``segment_anything.modeling.Sam`` look-alike (inference only)."""
  mask_threshold: float = 0.0
  image_format: str = "RGB"

  def __init__(self, loaded: LoadedSam):
    self.loaded = loaded
    # Resolved on first use: numpy-only paths (predict, the generator)
    # never import torch.
    self._device = None
    self.image_encoder = ImageEncoder(self)

  # ---- torch.nn.Module manners -------------------------------------------
  @property
  def device(self) -> Any:
    """``torch.device`` outputs are placed on (a string without torch)."""
    if self._device is None:
      self._device = tensors.resolve_device("cpu")
    return self._device

  def to(self, device=None, dtype=None, non_blocking: bool = False) -> Sam:
    """Records where outputs go and returns self (the model runs on JAX's
    default backend; pick it with ``JAX_PLATFORMS``)."""
    del non_blocking
    if dtype is not None:
      raise ValueError("samjax keeps float32 weights; for bfloat16 compute load with "
                       "samjax.load_sam(path, dtype='bfloat16')")
    if device is not None:
      self._device = tensors.resolve_device(device)
    return self

  def eval(self) -> Sam:
    return self

  def train(self, mode: bool = True) -> Sam:
    """No-op (training is ``samjax train``); returns self like torch."""
    del mode
    return self

  def cpu(self) -> Sam:
    return self.to("cpu")

  def cuda(self, device=None) -> Sam:
    return self.to("cuda" if device is None else device)

  @property
  def pixel_mean(self):
    """[3, 1, 1] float32."""
    return tensors.to_output(np.asarray(PIXEL_MEAN, np.float32).reshape(3, 1, 1),
                             self.device)

  @property
  def pixel_std(self):
    return tensors.to_output(np.asarray(PIXEL_STD, np.float32).reshape(3, 1, 1),
                             self.device)

  # ---- jitted pieces, built once per model --------------------------------
  @functools.cached_property
  def _plan(self):
    return InteractivePlan(self.loaded.model, PROMPT_CHUNK)

  @functools.cached_property
  def _embed(self):
    """[B, 3, S, S] -> [B, C, h, w]: one compiled encoder for ``image_encoder``
    and ``__call__``."""
    return jax.jit(self.loaded.model.embed_images)

  @functools.cached_property
  def _image_pe(self):
    return jax.jit(self._plan.image_pe)(self.loaded.params)

  @functools.cached_property
  def _prepare(self):
    """(params, one image's [1, C, h, w] embedding, PE) -> the plan's ``ImageState``."""
    return jax.jit(self._plan.prepare)

  # ---- official methods ---------------------------------------------------
  def preprocess(self, x):
    """[..., 3, H, W] 0-255 -> normalised, zero-padded [..., 3, S, S]."""
    out = normalize_and_pad_host(tensors.to_numpy(x, np.float32), self.image_encoder.img_size)
    return tensors.like(out, x)

  def postprocess_masks(self, masks, input_size, original_size):
    """[B, C, h, w] low-res logits -> [B, C, H, W] logits at ``original_size``."""
    out = postprocess_masks(tensors.to_numpy(masks, np.float32),
                            tensors.size_hw(input_size), tensors.size_hw(original_size),
                            self.image_encoder.img_size)
    return tensors.like(np.asarray(out), masks)

  def __call__(self, batched_input: list[dict[str, Any]], multimask_output: bool
               ) -> list[dict[str, Any]]:
    """Masks from images and prompts end to end (official ``Sam.forward``).

    Args:
      batched_input: one dict per image: 'image' [3, H, W] already resized
        by ``ResizeLongestSide`` (0-255, any dtype), 'original_size' (H, W),
        optional 'point_coords' [B, N, 2] + 'point_labels' [B, N], 'boxes'
        [B, 4] (both in the resized frame) and 'mask_inputs' [B, 1, 4h, 4w].
      multimask_output: 3 masks per prompt if True, else 1.
    Returns:
      one dict per image: 'masks' [B, C, H, W] bool, 'iou_predictions'
      [B, C], 'low_res_logits' [B, C, 4h, 4w] (torch when installed).
    """
    model, params = self.loaded.model, self.loaded.params
    images = [tensors.to_numpy(r["image"], np.float32) for r in batched_input]
    size = model.config.image_size
    emb = self._embed(params, np.stack([normalize_and_pad_host(x, size) for x in images]))
    outputs = []
    for i, record in enumerate(batched_input):
      coords, labels, boxes, masks, b = _prompts(record, model.config.mask_input_size)
      full, iou, low = decode_prompts(
          self._plan, params, self._prepare(params, emb[i:i + 1], self._image_pe), coords,
          labels, boxes, masks, b,
          input_size=images[i].shape[-2:],
          original_size=tensors.size_hw(record["original_size"]),
          multimask_output=multimask_output, return_logits=True)
      # Thresholded here: official code may change sam.mask_threshold.
      outputs.append({"masks": tensors.to_output(full > self.mask_threshold, self.device),
                      "iou_predictions": tensors.to_output(iou, self.device),
                      "low_res_logits": tensors.to_output(low, self.device)})
    return outputs


def _prompts(record: dict, mask_size: int):
  """One ``batched_input`` record's prompts -> validated numpy [B, ...] and B."""
  coords = labels = boxes = masks = None
  counts = set()
  if "point_coords" in record:
    coords, labels = validation.check_points(tensors.to_numpy(record["point_coords"]),
                                             tensors.to_numpy(record.get("point_labels")),
                                             batched=True)
    counts.add(coords.shape[0])
  if record.get("boxes") is not None:
    boxes = validation.check_boxes(tensors.to_numpy(record["boxes"]), batched=True)
    counts.add(boxes.shape[0])
  if record.get("mask_inputs") is not None:
    masks = validation.check_mask_input(tensors.to_numpy(record["mask_inputs"]),
                                        mask_size, batched=True)
    counts.add(masks.shape[0])
  if len(counts) != 1:
    raise ValueError("each batched_input record needs point_coords/point_labels, boxes "
                     "or mask_inputs with the same number of prompts B; got leading "
                     f"sizes {sorted(counts)}")
  return coords, labels, boxes, masks, counts.pop()

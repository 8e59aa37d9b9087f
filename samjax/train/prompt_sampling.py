"""Random prompts for interactive training, inside jit with fixed shapes.

All functions work on [B, K] masks at the ground-truth resolution G (the
low-res mask size, 256 for SAM) and return coordinates in the padded model
input frame (S = image_size, 1024 for SAM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_uniform_pixel(rng, region, image_size: int):
  """A uniformly random True pixel of each region, as (x, y) in the S frame.

  Args:
    region: [B, K, G, G] bool.
  Returns:
    xy [B, K, 2] float32 (pixel centre jittered within the pixel), found
    [B, K] bool (False where the region is empty; xy is then meaningless).
  """
  b, k, g, _ = region.shape
  r_idx, r_jit = jax.random.split(rng)
  flat = region.reshape(b, k, g * g)
  logits = jnp.where(flat, 0.0, -jnp.inf)
  idx = jax.random.categorical(r_idx, logits, axis=-1)          # [B, K]
  row, col = idx // g, idx % g
  jitter = jax.random.uniform(r_jit, (b, k, 2))
  scale = image_size / g
  xy = jnp.stack([(col + jitter[..., 0]) * scale, (row + jitter[..., 1]) * scale], -1)
  return xy.astype(jnp.float32), jnp.any(flat, axis=-1)


def noisy_boxes(rng, boxes, image_hw, noise_frac: float = 0.1, max_noise: float = 20.0):
  """GT boxes with Gaussian corner noise (std = noise_frac * side, capped).

  Args:
    boxes: [B, K, 4] x0, y0, x1, y1 in the S frame.
    image_hw: [B, 2] resized image (h, w): boxes are clipped to it.
  Returns:
    [B, K, 4] float32 boxes with x0 <= x1, y0 <= y1.
  """
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  std = jnp.minimum(noise_frac * jnp.stack([w, h, w, h], -1), max_noise)
  noisy = boxes + std * jax.random.normal(rng, boxes.shape)
  hw = image_hw.astype(jnp.float32)[:, None, :]                # [B, 1, 2]
  lim = jnp.stack([hw[..., 1], hw[..., 0], hw[..., 1], hw[..., 0]], -1)
  noisy = jnp.clip(noisy, 0.0, lim)
  x0 = jnp.minimum(noisy[..., 0], noisy[..., 2])
  x1 = jnp.maximum(noisy[..., 0], noisy[..., 2])
  y0 = jnp.minimum(noisy[..., 1], noisy[..., 3])
  y1 = jnp.maximum(noisy[..., 1], noisy[..., 3])
  return jnp.stack([x0, y0, x1, y1], -1).astype(jnp.float32)


def error_region_point(rng, pred_logits, targets, image_size: int):
  """A corrective click uniformly from the error region of a prediction.

  Positive (label 1) on a false negative, negative (label 0) on a false
  positive, as in SAM's interactive training.

  Args:
    pred_logits: [B, K, G, G] previous mask logits (thresholded at 0).
    targets: [B, K, G, G] {0, 1}.
  Returns:
    xy [B, K, 2], label [B, K] int32, found [B, K] bool (no error -> no click).
  """
  pred = pred_logits > 0
  gt = targets > 0.5
  region = pred != gt
  xy, found = sample_uniform_pixel(rng, region, image_size)
  g = targets.shape[-1]
  scale = image_size / g
  col = jnp.clip((xy[..., 0] / scale).astype(jnp.int32), 0, g - 1)
  row = jnp.clip((xy[..., 1] / scale).astype(jnp.int32), 0, g - 1)
  label = jnp.take_along_axis(
      gt.reshape(gt.shape[0], gt.shape[1], -1), (row * g + col)[..., None], axis=-1)[..., 0]
  return xy, label.astype(jnp.int32), found

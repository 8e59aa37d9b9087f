"""Pre/post-processing equivalent to ``segment_anything/utils/transforms.py``
(``ResizeLongestSide``) and ``Sam.postprocess_masks``.

Images are resized so the longest side equals the model input size (same
rounding as the official ``get_preprocess_shape``), coordinates scaled the
same way, and low-res mask logits upsampled bilinearly (half-pixel centres,
no antialiasing, i.e. torch ``align_corners=False``) then cropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
  """(new_h, new_w) with the longest side = ``long_side`` (official rounding)."""
  scale = long_side * 1.0 / max(old_h, old_w)
  new_h, new_w = old_h * scale, old_w * scale
  return int(new_h + 0.5), int(new_w + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
  """HxWx3 uint8 -> resized uint8 (PIL bilinear, as the official transform)."""
  h, w = get_preprocess_shape(image.shape[0], image.shape[1], long_side)
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int
                 ) -> np.ndarray:
  """[..., 2] (x, y) in the original image -> the resized frame (float)."""
  old_h, old_w = original_size
  new_h, new_w = get_preprocess_shape(old_h, old_w, long_side)
  coords = np.array(coords, dtype=np.float64, copy=True)
  coords[..., 0] *= new_w / old_w
  coords[..., 1] *= new_h / old_h
  return coords


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int], long_side: int
                ) -> np.ndarray:
  """[..., 4] (x0, y0, x1, y1) -> the resized frame."""
  boxes = np.asarray(boxes)
  return apply_coords(boxes.reshape(boxes.shape[:-1] + (2, 2)), original_size,
                      long_side).reshape(boxes.shape)


def _bilinear(x, out_hw):
  """torch F.interpolate(mode='bilinear', align_corners=False) on [..., H, W]."""
  shape = x.shape[:-2] + tuple(out_hw)
  return jax.image.resize(x, shape, method="linear", antialias=False)


def postprocess_masks(low_res_logits, input_size: tuple[int, int],
                      original_size: tuple[int, int], image_size: int):
  """[..., 4h, 4w] logits -> [..., H, W] logits at the original resolution.

  Upsample to the padded model input, drop the padding, resize to the
  original image size (official ``Sam.postprocess_masks``).
  """
  x = _bilinear(jnp.asarray(low_res_logits, jnp.float32), (image_size, image_size))
  x = x[..., :input_size[0], :input_size[1]]
  return _bilinear(x, original_size)

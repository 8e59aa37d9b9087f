"""Pre/post-processing equivalent to ``segment_anything/utils/transforms.py``
(``ResizeLongestSide``) and ``Sam.postprocess_masks``.

Images are resized so the longest side equals the model input size (same
rounding as the official ``get_preprocess_shape``), coordinates scaled the
same way, and low-res mask logits upsampled bilinearly (half-pixel centres,
no antialiasing, i.e. torch ``align_corners=False``) then cropped.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from PIL import Image

from samjax.model.configs import PIXEL_MEAN, PIXEL_STD


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


def normalize_and_pad_host(images: np.ndarray, size: int) -> np.ndarray:
  """[..., 3, H, W] RGB 0-255 -> normalised, zero-padded float32 [..., 3, size, size].

  The numpy twin of ``samjax.model.sam.normalize_and_pad`` (the official
  ``Sam.preprocess``) for inference on the host: as jax ops it would compile
  three small programs for every new image shape, each time a process starts
  (too small for the persistent compilation cache to keep), before the first
  mask. float32 subtract and divide round the same in numpy and XLA.
  """
  x = np.asarray(images, np.float32)
  h, w = x.shape[-2:]
  if h > size or w > size:
    raise ValueError(f"image {h}x{w} larger than the model input {size}; resize "
                     "the longest side to it first")
  mean = np.asarray(PIXEL_MEAN, np.float32).reshape(3, 1, 1)
  std = np.asarray(PIXEL_STD, np.float32).reshape(3, 1, 1)
  out = np.zeros(x.shape[:-2] + (size, size), np.float32)
  out[..., :h, :w] = (x - mean) / std
  return out


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
  """[out, in] matrix of torch ``F.interpolate(mode='bilinear',
  align_corners=False)`` along one axis (half-pixel centres, source index
  clamped at 0, no antialiasing)."""
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = src - i0
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), i0), 1.0 - w1)
  np.add.at(m, (np.arange(out_size), i1), w1)
  return m


@functools.lru_cache(maxsize=64)
def postprocess_matrices(low_res: int, image_size: int, input_size: tuple[int, int],
                         original_size: tuple[int, int]):
  """Row and column matrices ([H, low_res], [W, low_res]) of the whole
  official post-processing: upsample to image_size, crop to input_size,
  resize to original_size. Each step is linear per axis, so their product
  is one small matrix per axis."""
  mats = []
  for axis in (0, 1):
    up = bilinear_matrix(image_size, low_res)[:input_size[axis]]
    down = bilinear_matrix(original_size[axis], input_size[axis])
    mats.append((down @ up).astype(np.float32))
  return tuple(mats)


@functools.lru_cache(maxsize=64)
def postprocess_bands(low_res: int, image_size: int, input_size: tuple[int, int],
                      original_size: tuple[int, int]):
  """``postprocess_matrices`` as bands, per axis (first [n] int32, weights
  [n, K] float32): output index i = sum_k weights[i, k] * input[first[i] + k].
  Two chained bilinear resizes touch at most a few consecutive inputs per
  output (K = 2 or 3 for SAM's sizes), so a band holds every nonzero of a
  matrix row; weights past the input's end are 0."""
  out = []
  for m in postprocess_matrices(low_res, image_size, input_size, original_size):
    nz = m != 0
    first = nz.argmax(axis=1)
    last = m.shape[1] - 1 - nz[:, ::-1].argmax(axis=1)
    idx = first[:, None] + np.arange(int((last - first).max()) + 1)
    inside = idx < m.shape[1]
    weights = np.where(inside, np.take_along_axis(m, np.minimum(idx, m.shape[1] - 1), 1), 0)
    out.append((first.astype(np.int32), weights.astype(np.float32)))
  return tuple(out)


def _apply_band(x, first, weights, axis: int):
  """One axis of ``postprocess_bands`` on ``x`` ([..., n_in, m] for axis -2,
  [..., m, n_in] for axis -1): K gathers of whole rows / columns, weighted."""
  n_in = x.shape[axis]
  acc = None
  for k in range(weights.shape[1]):
    idx = np.minimum(first + k, n_in - 1)
    w = weights[:, k, None] if axis == -2 else weights[None, :, k]
    term = jnp.take(x, idx, axis=axis) * w
    acc = term if acc is None else acc + term
  return acc


def postprocess_masks(low_res_logits, input_size: tuple[int, int],
                      original_size: tuple[int, int], image_size: int):
  """[..., 4h, 4w] logits -> [..., H, W] logits at the original resolution.

  Same result as the official ``Sam.postprocess_masks`` (bilinear upsample to
  the padded input, crop the padding, bilinear resize to the original size),
  computed per axis with the composed resize (``postprocess_bands``): 2-3
  weighted inputs per output pixel and axis, instead of materialising
  1024x1024 intermediates or multiplying by the mostly-zero dense matrices
  (256 multiply-adds per output pixel and axis: ~12 GFLOP for three masks of
  a 1500x2250 photo).
  """
  low = low_res_logits.shape[-1]
  (r_first, r_w), (c_first, c_w) = postprocess_bands(
      low, image_size, tuple(input_size), tuple(original_size))
  x = jnp.asarray(low_res_logits, jnp.float32)
  x = _apply_band(x, r_first, r_w, axis=-2)
  return _apply_band(x, c_first, c_w, axis=-1)

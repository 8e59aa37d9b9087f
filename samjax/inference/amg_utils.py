"""Host-side helpers of the automatic mask generator (numpy, no torch).

Same semantics as ``segment_anything/utils/amg.py``: point grids, crop boxes,
the crop-edge filter, uncompressed RLE and small-region removal (compressed
COCO RLE is ``mask_io.encode_rle``). Only what must stay dynamic-shaped lives
here; the per-mask arithmetic (upscaling, stability score, boxes, NMS) runs on
device in ``amg_kernels``.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
  """[n*n, 2] (x, y) points evenly spaced in [0, 1]^2, cell centres."""
  offset = 1 / (2 * n_per_side)
  side = np.linspace(offset, 1 - offset, n_per_side)
  xs = np.tile(side[None, :], (n_per_side, 1))
  ys = np.tile(side[:, None], (1, n_per_side))
  return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int,
                                scale_per_layer: int) -> list[np.ndarray]:
  """One grid per crop layer; layer i has n_per_side / scale**i points a side."""
  return [build_point_grid(int(n_per_side / (scale_per_layer ** i)))
          for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> tuple[list[list[int]], list[int]]:
  """Crop boxes [x0, y0, x1, y1] and their layer: the whole image, then
  (2**i)**2 overlapping crops for layer i (official order)."""
  im_h, im_w = im_size
  short_side = min(im_h, im_w)
  boxes, layers = [[0, 0, im_w, im_h]], [0]

  def crop_len(orig_len, n_crops, overlap):
    return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

  for i_layer in range(n_layers):
    n_side = 2 ** (i_layer + 1)
    overlap = int(overlap_ratio * short_side * (2 / n_side))
    crop_w = crop_len(im_w, n_side, overlap)
    crop_h = crop_len(im_h, n_side, overlap)
    x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
    y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
    for x0, y0 in product(x0s, y0s):
      boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
      layers.append(i_layer + 1)
  return boxes, layers


def is_box_near_crop_edge(boxes: np.ndarray, crop_box, orig_box, atol: float = 20.0
                          ) -> np.ndarray:
  """[K, 4] crop-frame xyxy boxes -> [K] bool: touches the crop's edge but
  not the image's edge (such masks are likely cut by the crop)."""
  x0, y0 = crop_box[0], crop_box[1]
  b = boxes.astype(np.float32) + np.array([x0, y0, x0, y0], np.float32)
  crop = np.asarray(crop_box, np.float32)[None]
  orig = np.asarray(orig_box, np.float32)[None]
  near_crop = np.abs(b - crop) <= atol
  near_image = np.abs(b - orig) <= atol
  return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box) -> list:
  """[x0, y0, x1, y1] -> [x0, y0, x1 - x0, y1 - y0] (official: no +1)."""
  x0, y0, x1, y1 = (int(v) for v in box)
  return [x0, y0, x1 - x0, y1 - y0]


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
  """HxW bool -> ``{"size": [h, w], "counts": [int, ...]}`` in column-major
  order, starting with the count of zeros (official ``mask_to_rle_pytorch``)."""
  h, w = mask.shape
  flat = mask.T.reshape(-1)
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  edges = np.concatenate([[0], change, [h * w]])
  counts = np.diff(edges).tolist()
  if flat.size and flat[0]:
    counts = [0, *counts]
  return {"size": [h, w], "counts": counts}


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str
                         ) -> tuple[np.ndarray, bool]:
  """Fills holes (``mode='holes'``) or drops islands (``'islands'``) smaller
  than ``area_thresh``; returns (mask, changed). Same rule as the official
  (8-connectivity; if every island is small, the largest is kept), with
  scipy's labelling instead of OpenCV's. Both number components in raster
  order of their first pixel, so even argmax ties resolve alike."""
  from scipy import ndimage
  if mode not in ("holes", "islands"):
    raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
  correct_holes = mode == "holes"
  working = correct_holes ^ mask
  regions, n = ndimage.label(working, structure=np.ones((3, 3), bool))
  sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
  small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
  if not small:
    return mask, False
  fill = [0, *small]
  if not correct_holes:
    fill = [i for i in range(n + 1) if i not in fill]
    if not fill:  # every island is small: keep the largest
      fill = [int(np.argmax(sizes)) + 1]
  return np.isin(regions, fill), True


def mask_to_box_xyxy(mask: np.ndarray) -> list[int]:
  """HxW bool -> [x0, y0, x1, y1] inclusive pixel indices; zeros if empty
  (official ``batched_mask_to_box``)."""
  ys = np.flatnonzero(mask.any(axis=1))
  xs = np.flatnonzero(mask.any(axis=0))
  if len(xs) == 0:
    return [0, 0, 0, 0]
  return [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])]

"""``segment_anything.utils.amg`` helpers users import: point grids, crop
boxes, RLE conversions, stability score, mask boxes.

Array helpers take torch tensors or numpy and answer in kind; the grid, crop
and small-region helpers are samjax's own (numpy, same results).
"""

from __future__ import annotations

from collections.abc import Generator
from copy import deepcopy
from typing import Any

import numpy as np

from samjax.inference.amg_utils import (
  build_all_layer_point_grids,
  build_point_grid,
  generate_crop_boxes,
  mask_to_uncompressed_rle,
  remove_small_regions,
)
from samjax.inference.amg_utils import is_box_near_crop_edge as _near_edge
from samjax.segment_anything import tensors

__all__ = [
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]


def batch_iterator(batch_size: int, *args) -> Generator[list[Any], None, None]:
  """Yields aligned slices of ``batch_size`` from each argument."""
  if not args or any(len(a) != len(args[0]) for a in args):
    raise ValueError("Batched iteration must have inputs of all the same size.")
  n_batches = -(-len(args[0]) // batch_size)
  for b in range(n_batches):
    yield [arg[b * batch_size:(b + 1) * batch_size] for arg in args]


def mask_to_rle_pytorch(tensor) -> list[dict[str, Any]]:
  """[B, H, W] bool masks -> uncompressed RLE dicts (column-major, zeros first)."""
  return [mask_to_uncompressed_rle(m) for m in tensors.to_numpy(tensor, bool)]


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
  """Uncompressed RLE -> HxW bool."""
  h, w = rle["size"]
  counts = np.asarray(rle["counts"], np.int64)
  values = np.arange(len(counts)) % 2 == 1
  return np.repeat(values, counts).reshape(w, h).transpose()


def area_from_rle(rle: dict[str, Any]) -> int:
  return sum(rle["counts"][1::2])


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
  """Uncompressed -> compressed COCO RLE with a str ``counts`` (JSON-ready)."""
  from pycocotools import mask as mask_utils
  h, w = uncompressed_rle["size"]
  rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
  rle["counts"] = rle["counts"].decode("utf-8")
  return rle


def calculate_stability_score(masks, mask_threshold: float, threshold_offset: float):
  """[..., H, W] logits -> [...] IoU of the masks thresholded at
  ``mask_threshold`` +- ``threshold_offset`` (float32)."""
  x = tensors.to_numpy(masks)
  inter = (x > mask_threshold + threshold_offset).sum((-1, -2), dtype=np.int64)
  union = (x > mask_threshold - threshold_offset).sum((-1, -2), dtype=np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return tensors.like((inter / union).astype(np.float32), masks)


def batched_mask_to_box(masks):
  """[..., H, W] bool -> [..., 4] xyxy inclusive boxes; [0, 0, 0, 0] if empty."""
  x = tensors.to_numpy(masks, bool)
  h, w = x.shape[-2:]
  rows, cols = x.any(-1), x.any(-2)
  top = np.where(rows.any(-1), rows.argmax(-1), h)
  bottom = np.where(rows.any(-1), h - 1 - rows[..., ::-1].argmax(-1), 0)
  left = np.where(cols.any(-1), cols.argmax(-1), w)
  right = np.where(cols.any(-1), w - 1 - cols[..., ::-1].argmax(-1), 0)
  out = np.stack([left, top, right, bottom], -1)
  # Official convention: an empty mask gets [0, 0, 0, 0].
  out = out * ~((right < left) | (bottom < top))[..., None]
  return tensors.like(out.astype(np.int64), masks)


def box_xyxy_to_xywh(box_xyxy):
  """[x0, y0, x1, y1] -> [x0, y0, w, h] (a copy; list, numpy or torch)."""
  box = deepcopy(box_xyxy)
  box[2] = box[2] - box[0]
  box[3] = box[3] - box[1]
  return box


def is_box_near_crop_edge(boxes, crop_box: list[int], orig_box: list[int],
                          atol: float = 20.0):
  """[K, 4] crop-frame boxes -> [K] bool: near the crop's edge, not the image's."""
  return tensors.like(_near_edge(tensors.to_numpy(boxes), crop_box, orig_box, atol), boxes)


def uncrop_boxes_xyxy(boxes, crop_box: list[int]):
  x0, y0 = crop_box[:2]
  return boxes + tensors.like(np.array([x0, y0, x0, y0]), boxes)


def uncrop_points(points, crop_box: list[int]):
  x0, y0 = crop_box[:2]
  return points + tensors.like(np.array([x0, y0]), points)


def uncrop_masks(masks, crop_box: list[int], orig_h: int, orig_w: int):
  """[..., Hc, Wc] crop-frame masks -> [..., orig_h, orig_w] zero-padded."""
  x0, y0, x1, y1 = crop_box
  if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
    return masks
  x = tensors.to_numpy(masks)
  pad = [(0, 0)] * (x.ndim - 2) + [(y0, orig_h - y1), (x0, orig_w - x1)]
  return tensors.like(np.pad(x, pad), masks)

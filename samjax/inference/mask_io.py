"""Binary masks -> COCO RLE / boxes / areas, in the format SA-1B ships."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict[str, object]:
  """HxW bool -> compressed COCO RLE ``{"size": [h, w], "counts": str}``."""
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": [int(rle["size"][0]), int(rle["size"][1])],
          "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, object]) -> np.ndarray:
  """Inverse of ``encode_rle``: HxW bool."""
  counts = rle["counts"]
  obj = {"size": list(rle["size"]),
         "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  return mask_utils.decode(obj).astype(bool)


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
  """Tight box of a mask as [x, y, w, h] (COCO / SA-1B convention); zeros if empty."""
  ys = np.flatnonzero(mask.any(axis=1))
  xs = np.flatnonzero(mask.any(axis=0))
  if len(xs) == 0:
    return [0.0, 0.0, 0.0, 0.0]
  return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]

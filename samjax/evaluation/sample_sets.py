"""A tiny, deterministic evaluation set in the formats ``samjax eval`` reads.

``make_eval_set(out_dir)`` writes::

    images/img_<k>.png        3 synthetic 128x128 images (one size: one compiled
                              decoder program per prompt shape in tests)
    instances.json            COCO instances: polygons, compressed RLE and one
                              uncompressed RLE; iscrowd 0; areas in all three
                              COCO ranges; LVIS-style category frequencies
    detections.json           COCO detection results: jittered GT boxes with
                              scores, plus one false positive per image that
                              reaches past the image border
    sa1b/sa_<n>.{jpg,json}    2 images in SA-1B layout (``sample_data.make_pair``)

Objects are painted in order, later ones on top; an object some later one
overlaps is stored as RLE of its visible part, the others as their polygon,
so every annotation is exactly the pixels of its object (pycocotools'
rasterisation of the polygon). Same arguments -> identical files.
``out_dir`` may be local, ``gs://`` or ``s3://``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import atomic_io, sample_data, storage

CATEGORIES = [{"id": 1, "name": "blob", "frequency": "f"},
              {"id": 2, "name": "disc", "frequency": "c"},
              {"id": 3, "name": "speck", "frequency": "r"}]


def _ellipse(cx, cy, rx, ry, n=24) -> list[float]:
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).ravel().round(2).tolist()


def _rect(x0, y0, x1, y1) -> list[float]:
  return [x0, y0, x1, y0, x1, y1, x0, y1]


# Per image: (height, width, [(category, polygon), ...] in painting order).
# COCO area ranges: small < 32^2 <= medium < 96^2 <= large.
LAYOUTS = [
    (128, 128, [(1, _rect(4, 4, 124, 122)),           # large, occluded below -> RLE
                (2, _ellipse(40, 44, 22, 18)),        # medium
                (3, _ellipse(100, 100, 6, 5)),        # small
                (2, _ellipse(-4, 100, 18, 16))]),     # cut by the left border
    (128, 128, [(2, _ellipse(70, 48, 34, 24)),        # medium, occluded below -> RLE
                (3, _rect(60, 40, 72, 52)),           # small
                (1, [100, 0, 127.5, 0, 127.5, 30, 110, 20]),  # in the top-right corner
                (3, _ellipse(18, 80, 7, 6))]),        # small
    (128, 128, [(2, _ellipse(48, 40, 30, 26)),        # medium
                (1, _rect(10, 80, 86, 124)),          # medium, touches nothing
                (3, _ellipse(120, 8, 5, 5))]),        # small, near a corner
]


def _raster(poly: list[float], h: int, w: int) -> np.ndarray:
  rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
  return mask_utils.decode(rle).astype(bool)


def _paint(h: int, w: int, masks: list[np.ndarray], rng) -> np.ndarray:
  yy, xx = np.mgrid[:h, :w]
  base = np.stack([60 + 80 * yy / h, 90 + 60 * xx / w, 120 + 0 * xx], -1)
  img = base + rng.normal(0, 6, (h, w, 3))
  for m in masks:
    color = rng.uniform(30, 230, 3)
    img[m] = color + rng.normal(0, 10, (int(m.sum()), 3))
  return np.clip(img, 0, 255).astype(np.uint8)


def _uncompressed(mask: np.ndarray) -> dict:
  """COCO's uncompressed RLE: run lengths (column-major, from a 0-run) as a list."""
  flat = mask.ravel(order="F").astype(np.int8)
  change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
  runs = np.diff(np.concatenate([[0], change]))
  return {"size": list(mask.shape), "counts": [int(v) for v in runs]}


def make_eval_set(out_dir: str, seed: int = 0) -> dict[str, str]:
  """Writes the set; returns the paths: ``annotations``, ``images``,
  ``detections``, ``sa1b``."""
  rng = np.random.default_rng(seed)
  img_dir = storage.join(out_dir, "images")
  atomic_io.ensure_dir(img_dir)
  images, anns, dets = [], [], []
  for k, (h, w, layout) in enumerate(LAYOUTS):
    image_id = 10 + k
    raw = [(cat, poly, _raster(poly, h, w)) for cat, poly in layout]
    masks = [m for _, _, m in raw]
    pixels = _paint(h, w, masks, rng)
    name = f"img_{k}.png"
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    atomic_io.write_bytes(storage.join(img_dir, name), png.getvalue())
    images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    for j, (cat, poly, m) in enumerate(raw):
      visible = m & ~np.any(masks[j + 1:], axis=0) if j + 1 < len(masks) else m
      rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
      if (visible == m).all():
        seg = [poly]
      elif k == 1:
        seg = _uncompressed(visible)
      else:
        seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
      bbox = [float(v) for v in mask_utils.toBbox(rle)]
      anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                   "segmentation": seg, "area": float(mask_utils.area(rle)),
                   "bbox": bbox, "iscrowd": 0})
      jitter = rng.normal(0, 1.5, 4)
      dets.append({"image_id": image_id, "category_id": cat,
                   "bbox": [round(float(v), 2) for v in np.maximum(np.add(bbox, jitter), 1)],
                   "score": round(float(rng.uniform(0.5, 0.99)), 3)})
    # A false positive reaching past the image's corner (detectors do that).
    dets.append({"image_id": image_id, "category_id": 1,
                 "bbox": [float(w - 12), float(h - 14), 16.0, 16.0], "score": 0.3})
  paths = {"annotations": storage.join(out_dir, "instances.json"), "images": img_dir,
           "detections": storage.join(out_dir, "detections.json"),
           "sa1b": storage.join(out_dir, "sa1b")}
  atomic_io.write_json(paths["annotations"], {"images": images, "annotations": anns,
                                              "categories": CATEGORIES})
  atomic_io.write_json(paths["detections"], dets)
  atomic_io.ensure_dir(paths["sa1b"])
  for i in range(2):
    jpg, meta = sample_data.make_pair(i, 64, 96, 2, seed)
    atomic_io.write_bytes(storage.join(paths["sa1b"], f"sa_{i + 1}.jpg"), jpg)
    atomic_io.write_bytes(storage.join(paths["sa1b"], f"sa_{i + 1}.json"), meta)
  return paths

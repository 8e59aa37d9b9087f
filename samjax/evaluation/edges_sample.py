"""A tiny BSDS500-style edge set made by code (tests, smoke runs).

``make_bsds_sample(out)`` writes::

    out/images/<id>.jpg             RGB images (a background and a few shapes)
    out/groundTruth/<id>.mat        BSDS500 layout: 1xK cell of {Segmentation, Boundaries}
    out/groundTruth_png/<id>_<k>.png  the same K annotators' boundaries as 0/255 PNGs

Annotator k outlines all shapes but the last k (annotators disagree, as in
BSDS500). A boundary pixel is a pixel whose right or lower neighbour has
another region label.
"""

from __future__ import annotations

import io

import numpy as np

from data_pipelines import atomic_io, storage
from samjax.evaluation.edges_gt import write_bsds_mat


def segment_boundaries(labels: np.ndarray) -> np.ndarray:
  """[H, W] region labels -> [H, W] bool: label differs to the right or below."""
  b = np.zeros(labels.shape, bool)
  b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
  b[:-1, :] |= labels[:-1, :] != labels[1:, :]
  return b


def _shapes(rng, h: int, w: int, n: int) -> list[np.ndarray]:
  """n random filled rectangles / ellipses, [H, W] bool each."""
  yy, xx = np.mgrid[:h, :w]
  out = []
  for i in range(n):
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.12, 0.3) * h, rng.uniform(0.1, 0.25) * w
    if i % 2:
      out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0)
    else:
      out.append((np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx))
  return out


def make_bsds_sample(out_dir: str, n_images: int = 3, height: int = 64, width: int = 96,
                     n_annotators: int = 3, n_shapes: int = 3, seed: int = 0) -> list[str]:
  """Writes the set and returns the image ids (sorted)."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  dirs = {k: storage.join(out_dir, k) for k in ("images", "groundTruth", "groundTruth_png")}
  for d in dirs.values():
    atomic_io.ensure_dir(d)
  ids = []
  for i in range(n_images):
    image_id = f"{900001 + i}"
    shapes = _shapes(rng, height, width, n_shapes)
    colours = rng.integers(0, 256, (n_shapes + 1, 3))
    labels = np.zeros((height, width), np.uint16)
    for s, m in enumerate(shapes):
      labels[m] = s + 1
    rgb = colours[labels] + rng.normal(0, 4, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                quality=95)
    atomic_io.write_bytes(storage.join(dirs["images"], image_id + ".jpg"), buf.getvalue())
    segs, bounds = [], []
    for k in range(n_annotators):
      seg = np.zeros((height, width), np.uint16)
      for s, m in enumerate(shapes[:max(1, n_shapes - k)]):
        seg[m] = s + 1
      segs.append(seg + 1)  # BSDS labels start at 1
      bounds.append(segment_boundaries(seg))
    write_bsds_mat(storage.join(dirs["groundTruth"], image_id + ".mat"), bounds, segs)
    for k, b in enumerate(bounds):
      buf = io.BytesIO()
      Image.fromarray(b.astype(np.uint8) * 255).save(buf, format="PNG")
      atomic_io.write_bytes(storage.join(dirs["groundTruth_png"], f"{image_id}_{k}.png"),
                            buf.getvalue())
    ids.append(image_id)
  return ids

"""A small, deterministic dataset in exact SA-1B layout, built offline.

``make_sample(out_dir)`` writes ``sa_000000.tar, sa_000001.tar, ...``, each
holding ``sa_<id>.jpg`` + ``sa_<id>.json`` pairs exactly as SA-1B ships them
(COCO compressed RLE masks, xywh boxes, area, predicted_iou, stability_score,
crop_box, point_coords). Backgrounds are real photographs shipped with
scikit-image (astronaut, coffee, chelsea, rocket, ...); onto them we composite
textured objects (textures from scikit-image's brick, grass, gravel, ...), each
with nested masks: the whole object, a part of it and a part of that part, the
whole/part ambiguity SAM is trained on. Later objects occlude earlier ones and
every mask is the exact visible region, so masks are exact by construction.
Each image also gets a "background" mask (everything not covered by an
object), which is often > 90% of the image, the case the pipeline drops.

Same arguments -> byte-identical tar files.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import atomic_io, storage

BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
               "retina", "immunohistochemistry", "colorwheel")
TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "coins", "cell", "page")


def _skimage(name: str) -> np.ndarray:
  import skimage.data
  return np.asarray(getattr(skimage.data, name)())


class _Library:
  """Caches the scikit-image pictures as float32 arrays."""

  def __init__(self):
    self._cache: dict[str, np.ndarray] = {}

  def get(self, name: str) -> np.ndarray:
    if name not in self._cache:
      a = _skimage(name)
      if a.ndim == 2:
        a = a[..., None]
      self._cache[name] = a[..., :3].astype(np.float32)
    return self._cache[name]


def _crop_resize(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """Random crop of ``img`` with aspect w/h, resized to (h, w, C) float32."""
  ih, iw = img.shape[:2]
  scale = min(ih / h, iw / w) * rng.uniform(0.6, 1.0)
  ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
  y, x = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
  crop = img[y:y + ch, x:x + cw]
  chans = [np.asarray(Image.fromarray(crop[..., c]).resize((w, h), Image.BILINEAR))
           for c in range(crop.shape[2])]
  return np.stack(chans, -1).astype(np.float32)


def _shape(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """A random ellipse or star-shaped polygon filling most of an h x w box."""
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  if rng.random() < 0.5:
    t = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    return (u / (w / 2)) ** 2 + (v / (h / 2)) ** 2 <= 0.95
  k = int(rng.integers(5, 11))
  radius = rng.uniform(0.55, 1.0, k)
  ang = np.sort(rng.uniform(0, 2 * np.pi, k))
  # Star-shaped polygon: a point is inside if its radius is under the
  # piecewise-linear radius profile at its angle.
  a = np.arctan2((yy - cy) / (h / 2), (xx - cx) / (w / 2)) % (2 * np.pi)
  r = np.hypot((yy - cy) / (h / 2), (xx - cx) / (w / 2))
  prof = np.interp(a, np.concatenate([ang - 2 * np.pi, ang, ang + 2 * np.pi]),
                   np.tile(radius, 3))
  return r <= prof


def _texture(lib: _Library, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  tex = _crop_resize(lib.get(TEXTURES[rng.integers(len(TEXTURES))]), h, w, rng)
  tint = rng.uniform(0.2, 1.0, 3).astype(np.float32)
  return np.clip(tex.mean(-1, keepdims=True) * tint * 1.3 + rng.uniform(0, 40), 0, 255)


def make_image(index: int, height: int, width: int, num_objects: int,
               seed: int = 0, lib: _Library | None = None,
               object_size: tuple[float, float] = (0.06, 0.35),
               subpart_size: float = 0.18):
  """Generates image ``index``: (uint8 (H, W, 3) pixels, [(mask (H, W) bool, kind)]).

  Object heights are drawn uniformly from ``object_size`` x min(H, W); the
  subpart is a disc of radius ``subpart_size`` x the object's shorter side.
  Masks are listed in creation order: for each object (whole, part, subpart),
  then the background. Fully occluded masks are left out.
  """
  lib = lib or _Library()
  rng = np.random.default_rng([seed, index])
  img = _crop_resize(lib.get(BACKGROUNDS[index % len(BACKGROUNDS)]), height, width, rng)
  owner = np.full((height, width), -1, np.int32)
  objects = []  # (y0, x0, whole_local, part_local, subpart_local)
  side = min(height, width)
  for k in range(num_objects):
    oh = max(4, int(side * rng.uniform(*object_size)))
    ow = max(4, int(oh * rng.uniform(0.6, 1.6)))
    ow = min(ow, width)
    y0, x0 = rng.integers(0, height - oh + 1), rng.integers(0, width - ow + 1)
    whole = _shape(oh, ow, rng)
    # Part: the whole cut by a random half-plane through a point inside it.
    yy, xx = np.mgrid[:oh, :ow]
    t = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(-0.2, 0.3) * min(oh, ow)
    part = whole & (((yy - oh / 2) * np.sin(t) + (xx - ow / 2) * np.cos(t)) > off)
    # Subpart: a small ellipse inside the part.
    sub = np.zeros_like(whole)
    if part.any():
      py, px = np.nonzero(part)
      j = rng.integers(len(py))
      r = max(2.0, subpart_size * min(oh, ow))
      sub = part & ((yy - py[j]) ** 2 + (xx - px[j]) ** 2 <= r * r)
    win = (slice(y0, y0 + oh), slice(x0, x0 + ow))
    paint = img[win]
    for region, tex in ((whole, _texture(lib, oh, ow, rng)),
                        (part, _texture(lib, oh, ow, rng)),
                        (sub, _texture(lib, oh, ow, rng))):
      paint[region] = tex[region]
    owner[win][whole] = k
    objects.append((y0, x0, whole, part, sub))
  masks = []
  for k, (y0, x0, whole, part, sub) in enumerate(objects):
    win = (slice(y0, y0 + whole.shape[0]), slice(x0, x0 + whole.shape[1]))
    visible = owner[win] == k
    for region, kind in ((whole, "whole"), (part, "part"), (sub, "subpart")):
      local = visible & region
      if local.sum() < 4:
        continue
      full = np.zeros((height, width), bool)
      full[win] = local
      masks.append((full, kind))
  bg = owner < 0
  if bg.any():
    masks.append((bg, "background"))
  return np.clip(img, 0, 255).astype(np.uint8), masks


def _annotation(mask: np.ndarray, ann_id: int, rng: np.random.Generator) -> dict:
  enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  ys, xs = np.nonzero(mask)
  j = rng.integers(len(ys))
  w, h = mask.shape[1], mask.shape[0]
  return {
      "id": ann_id,
      "segmentation": {"size": [h, w], "counts": enc["counts"].decode("ascii")},
      "bbox": [float(v) for v in mask_utils.toBbox(enc)],
      "area": int(mask_utils.area(enc)),
      "predicted_iou": float(np.round(rng.uniform(0.88, 1.0), 6)),
      "stability_score": float(np.round(rng.uniform(0.95, 1.0), 6)),
      "crop_box": [0.0, 0.0, float(w), float(h)],
      "point_coords": [[float(xs[j]), float(ys[j])]],
  }


def make_pair(index: int, height: int, width: int, num_objects: int, seed: int = 0,
              quality: int = 90, lib: _Library | None = None,
              **shape_kwargs) -> tuple[bytes, bytes]:
  """(jpg bytes, json bytes) of sample image ``index`` (image_id = index + 1).

  ``shape_kwargs``: ``object_size`` / ``subpart_size`` of ``make_image``.
  """
  pixels, masks = make_image(index, height, width, num_objects, seed, lib, **shape_kwargs)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
  image_id = index + 1
  rng = np.random.default_rng([seed, index, 1])
  anns = [_annotation(m, image_id * 1000 + i, rng) for i, (m, _) in enumerate(masks)]
  meta = {"image": {"image_id": image_id, "width": width, "height": height,
                    "file_name": f"sa_{image_id}.jpg"},
          "annotations": anns}
  return buf.getvalue(), json.dumps(meta).encode()


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
  """Adds bytes with fixed metadata (so reruns give identical tars)."""
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mtime = 0
  info.mode = 0o644
  tf.addfile(info, io.BytesIO(data))


def make_sample(out_dir: str, num_images: int = 8, images_per_tar: int = 4,
                height: int = 240, width: int = 360, num_objects: int = 6,
                seed: int = 0, quality: int = 90, progress: bool = False,
                object_size: tuple[float, float] = (0.06, 0.35),
                subpart_size: float = 0.18) -> list[str]:
  """Writes the sample dataset; returns the tar paths.

  ``object_size`` / ``subpart_size``: see ``make_image``. The training demo
  uses fewer, larger objects (its 256 px model sees a 360 x 240 image at
  0.7x, where the default subparts would be under one output pixel).

  SA-1B-sized settings: ``height=1500, width=2250, num_objects=34`` gives ~100
  masks per image.

  Each tar is written atomically (``atomic_io``): an interrupted run leaves
  whole tars and temp files only.

  Raises:
    ValueError: ``num_images`` or ``images_per_tar`` < 1.
    OSError: ``out_dir`` cannot be created or written.
  """
  if num_images < 1 or images_per_tar < 1:
    raise ValueError(f"--images and --per-tar must be >= 1, got {num_images} and "
                     f"{images_per_tar}")
  atomic_io.ensure_dir(out_dir)
  lib = _Library()
  paths = []
  n_tars = (num_images + images_per_tar - 1) // images_per_tar
  bar = range(num_images)
  if progress:
    from tqdm import tqdm
    bar = tqdm(bar, desc="sample images", unit="img")
  it = iter(bar)
  for t in range(n_tars):
    path = storage.join(out_dir, f"sa_{t:06d}.tar")
    with atomic_io.atomic_writer(path) as f, \
        tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
      for i in range(t * images_per_tar, min(num_images, (t + 1) * images_per_tar)):
        next(it)
        jpg, meta = make_pair(i, height, width, num_objects, seed, quality, lib,
                               object_size=object_size, subpart_size=subpart_size)
        add_member(tf, f"sa_{i + 1}.jpg", jpg)
        add_member(tf, f"sa_{i + 1}.json", meta)
    paths.append(path)
  return paths

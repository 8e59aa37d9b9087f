"""One serialized SA-1B Example -> fixed-shape training arrays.

Per image (S = ``image_size``, G = ``gt_size``, K = ``max_masks``)::

  image          (S, S, 3) uint8   resized so the longest side is S, zero-padded
                                   bottom/right (normalisation happens on device)
  masks          (K, G, G) uint8   {0,1} ground truth on the padded square at
                                   resolution G (G = S / 4 gives SAM's 256 for 1024)
  boxes          (K, 4)    float32 x0, y0, x1, y1 in resized-image (S) pixels
  points         (K, 2)    float32 x, y of the SA-1B point, resized-image pixels
  valid          (K,)      bool    which of the K slots hold a mask (valid ones
                                   first; a mask that vanishes at G is not valid)
  image_size     (2,)      int32   resized (h, w) before padding
  original_size  (2,)      int32   (h, w) of the JPEG
  image_id       ()        int64

When the record carries a training-resolution copy (``train_copy.py``) of
exactly the size needed, that JPEG is decoded as is (no resize) and the
masks come from the stored G-resolution RLEs (bit-identical to rasterising
the originals). Otherwise (a dataset converted without copies, or another S
or G) the original JPEG is decoded at reduced size when it is at least 2x
the target (``Image.draft`` lets libjpeg scale the DCT by 1/2, 1/4 or 1/8:
SA-1B's 1500x2250 become 750x1125 before the resize to 1024) and resized.
Masks covering more than ``max_mask_area`` of the image are dropped (as in
SAM's training), up to K of the rest are sampled at random, and only those
are rasterised from their RLE, directly at G x G (``rle.decode_resized``):
no full-resolution mask is ever built. The geometry matches SAM's
``ResizeLongestSide``.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from data_pipelines import example_codec, rle, train_copy
from data_pipelines.grain_source import ReadError, locate


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  image_size: int = 1024      # S: model input side
  gt_size: int = 256          # G: ground-truth mask side (the loss resolution)
  max_masks: int = 64         # K: masks per image, padded with valid=False
  max_mask_area: float = 0.9  # drop masks covering more than this fraction
  reduced_decode: bool = True  # JPEG DCT-domain downscaling when >= 2x too big
  # PIL filter for the resize left after the DCT downscale (SA-1B: 1125 ->
  # 1024, a factor 0.91): "bilinear" (antialiased, ~5 ms per SA-1B image on
  # this CPU) or "nearest" (~0.3 ms; drops ~1 in 11 rows/columns of an image
  # the DCT scaling has already low-passed).
  resize_filter: str = "bilinear"
  # Read the stored training-resolution copies when their size matches
  # (False: always decode the originals, e.g. to compare).
  use_train_copy: bool = True


resized_shape = train_copy.resized_shape


FILTERS = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "bicubic": Image.BICUBIC, "box": Image.BOX}


def decode_image(jpeg: bytes, size: tuple[int, int], reduced: bool = True,
                 resize_filter: str = "bilinear") -> np.ndarray:
  """JPEG bytes -> uint8 (h, w, 3) RGB at exactly ``size`` = (h, w)."""
  h, w = size
  with Image.open(io.BytesIO(jpeg)) as im:
    if reduced:
      im.draft("RGB", (w, h))  # picks the largest DCT scale keeping >= (w, h)
    if im.mode != "RGB":
      im = im.convert("RGB")
    if im.size != (w, h):
      im = im.resize((w, h), FILTERS[resize_filter])
    return np.asarray(im)


def empty_batch(cfg: DecodeConfig, batch: int) -> dict[str, np.ndarray]:
  """Zero arrays of ``batch`` padded examples (shapes in the module docstring)."""
  s, g, k, b = cfg.image_size, cfg.gt_size, cfg.max_masks, batch
  return {
      "image": np.zeros((b, s, s, 3), np.uint8),  # calloc: untouched padding is free
      "masks": np.zeros((b, k, g, g), np.uint8),
      "boxes": np.zeros((b, k, 4), np.float32),
      "points": np.zeros((b, k, 2), np.float32),
      "valid": np.zeros((b, k), bool),
      "image_size": np.zeros((b, 2), np.int32),
      "original_size": np.zeros((b, 2), np.int32),
      "image_id": np.zeros((b,), np.int64),
  }


def pad_into(out: dict[str, np.ndarray], j: int, ex: dict) -> None:
  """Writes the compact example ``ex`` (``decode_compact``) into row ``j`` of
  zero-initialised batch arrays ``out`` (``empty_batch``)."""
  rh, rw = ex["image"].shape[:2]
  n, gh, gw = ex["masks"].shape
  out["image"][j, :rh, :rw] = ex["image"]
  out["masks"][j, :n, :gh, :gw] = ex["masks"]
  out["boxes"][j, :n] = ex["boxes"]
  out["points"][j, :n] = ex["points"]
  out["valid"][j, :n] = True
  out["image_size"][j] = (rh, rw)
  out["original_size"][j] = ex["original_size"]
  out["image_id"][j] = ex["image_id"]


def decode_compact(data: bytes, rng: np.random.Generator, cfg: DecodeConfig,
                   where: str = "record") -> dict[str, np.ndarray]:
  """Serialized Example -> one example *before padding* (n <= K valid masks)::

    image          (rh, rw, 3) uint8   resized, longest side S
    masks          (n, gh, gw) uint8   {0,1}, gh, gw = resized_shape(h, w, G)
    boxes          (n, 4)      float32 x0, y0, x1, y1 in resized-image pixels
    points         (n, 2)      float32 (-1, -1) for a mask without a point
    original_size  (2,)        int32
    image_id       ()          int64

  The pipeline pads a whole batch at once (``pad_into``) into the arrays
  listed in the module docstring, so no padded per-example buffers are
  allocated and copied again by the batching. Raises
  ``example_codec.ExampleError``, ``rle.RLEError`` or PIL's errors on bad
  data (``SA1BDecode`` turns them into ``ReadError``s).
  """
  ex = example_codec.decode(data, where)
  h, w = ex["image/height"], ex["image/width"]
  s, g, k = cfg.image_size, cfg.gt_size, cfg.max_masks
  rh, rw = resized_shape(h, w, s)
  copy = cfg.use_train_copy and "train/image/encoded" in ex and (
      ex["train/image/height"], ex["train/image/width"]) == (rh, rw)
  if copy:  # already (rh, rw): a plain decode, no resize
    img = decode_image(ex["train/image/encoded"], (rh, rw), reduced=False)
  else:
    img = decode_image(ex["image/encoded"], (rh, rw), cfg.reduced_decode, cfg.resize_filter)
  if img.shape != (rh, rw, 3):
    raise ValueError(f"{where}: decoded image {img.shape} != {(rh, rw, 3)}")
  gh, gw = resized_shape(h, w, g)
  out = {"image": img, "masks": np.zeros((0, gh, gw), np.uint8),
         "boxes": np.zeros((0, 4), np.float32), "points": np.zeros((0, 2), np.float32),
         "original_size": np.array((h, w), np.int32),
         "image_id": np.array(ex["image/id"], np.int64)}

  eligible = np.flatnonzero(ex["mask/area"] <= cfg.max_mask_area * h * w)
  chosen = rng.permutation(eligible)[:k] if len(eligible) > k else rng.permutation(eligible)
  n = len(chosen)
  if n == 0:
    return out
  # Stored RLEs at (gh, gw) rasterise 1:1 to the same masks as the originals.
  if cfg.use_train_copy and "train/mask/counts" in ex and (
      ex["train/mask/height"], ex["train/mask/width"]) == (gh, gw):
    key, sh, sw = "train/mask/counts", gh, gw
  else:
    key, sh, sw = "mask/counts", h, w
  counts = ex[key]
  try:
    runs, offsets = rle.parse_counts_batch([counts[i] for i in chosen])
  except rle.RLEError as e:
    raise rle.RLEError(f"{where}: {key}: {e}") from None
  bad = rle.check_counts_batch(runs, offsets, sh, sw)
  if bad >= 0:
    r = runs[offsets[bad]:offsets[bad + 1]]
    raise rle.RLEError(f"{where}: {key} of mask {ex['mask/id'][chosen[bad]]}: runs cover "
                       f"{int(r.sum())} pixels (or are negative), mask is {sh}x{sw}")
  small = rle.decode_resized_batch(runs, offsets, sh, sw, gh, gw)
  # A mask thinner than a G-pixel can vanish at G: no usable target, so it
  # does not count as valid (the sample is compacted to the front).
  keep = small.any(axis=(1, 2))
  if not keep.all():
    small, chosen = small[keep], chosen[keep]
  n = len(chosen)
  sx, sy = rw / w, rh / h
  x, y, bw, bh = ex["mask/bbox"][chosen].T
  first = np.concatenate([[0], np.cumsum(ex["mask/num_points"])[:-1]])
  has_pt = ex["mask/num_points"][chosen] > 0
  pts = ex["mask/point_coords"][np.where(has_pt, first[chosen], 0)] if len(
      ex["mask/point_coords"]) else np.zeros((n, 2), np.float32)
  out["masks"] = small
  out["boxes"] = np.stack([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], -1)
  out["points"] = np.where(has_pt[:, None], pts * (sx, sy), -1.0)
  return out


class SA1BDecode:
  """grain random map: (source index, bytes | ReadError) -> compact arrays | ReadError.

  Compact = ``decode_compact``'s unpadded example; ``batching.PadBatch`` pads.

  Bad records (unparseable Example, corrupt JPEG, malformed RLE) come back as
  ``ReadError`` naming the shard and record, for ``SkipErrors`` to drop and
  count. ``paths``/``starts`` are the source's (to name records).
  """

  def __init__(self, cfg: DecodeConfig, paths: list[str], starts: np.ndarray):
    self.cfg = cfg
    self.paths = list(paths)
    self.starts = np.asarray(starts)

  def __call__(self, element, rng: np.random.Generator):
    index, data = element
    if isinstance(data, ReadError):
      return data
    path, n = locate(self.paths, self.starts, index)
    where = f"{path}#{n}"
    try:
      return decode_compact(data, rng, self.cfg, where)
    except Exception as e:  # any decode failure is a bad record, never fatal
      msg = str(e) if where in str(e) else f"{where}: {e}"
      return ReadError(where, f"{type(e).__name__}: {msg}")

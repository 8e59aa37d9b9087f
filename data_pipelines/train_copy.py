"""Training-resolution copies stored next to the originals at conversion time.

Decoding a full SA-1B JPEG (2250x1500, ~450 KiB) and resizing it to the
model's 1024 costs more per image than everything else in the input
pipeline together, and it is the same work every epoch. The converter can
therefore do it once and store, *alongside* the untouched originals:

* ``train/image/encoded``: the image decoded at full resolution, resized so
  its longest side is ``image_size`` (``decode.resized_shape``, PIL bilinear
  with antialiasing, as SAM's ``ResizeLongestSide`` preprocessing does) and
  re-encoded as JPEG at ``quality`` with 4:4:4 chroma (no chroma
  subsampling; at q95 it is about as close to a full-resolution decode +
  resize as the pipeline's own reduced decode + resize of the original, see
  experiments/results/bench_data_*). Shape (h', w', 3), max(h', w') =
  ``image_size``. Stored only when the original is larger than
  ``image_size`` (upscaled copies would only be bigger than the original).
* ``train/mask/counts``: every mask as a COCO compressed RLE at the
  ground-truth resolution ``gt_size``: (g_h, g_w) = ``resized_shape(h, w,
  gt_size)``, sampled exactly like ``rle.decode_resized`` samples the
  originals, so a pipeline decoding these gets bit-identical masks.

The pipeline uses a copy only when its stored size equals the size it needs
(same ``image_size`` / ``gt_size``); otherwise it falls back to the
originals, so any dataset reads with any pipeline configuration.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import rle


@dataclasses.dataclass(frozen=True)
class TrainCopyConfig:
  """What the converter stores next to the originals (0 disables a part)."""
  image_size: int = 1024  # longest side of the stored JPEG (the model's S)
  gt_size: int = 256      # side of the padded square the stored RLEs live on (G)
  quality: int = 95       # JPEG quality of the stored copy (4:4:4 chroma)

  def __post_init__(self):
    if self.image_size < 0 or self.gt_size < 0:
      raise ValueError(f"train copy sizes must be >= 0 (0 = off), got image_size="
                       f"{self.image_size}, gt_size={self.gt_size}")
    if not 1 <= self.quality <= 100:
      raise ValueError(f"train copy JPEG quality must be in [1, 100], got {self.quality}")

  def describe(self) -> dict:
    """JSON-able summary for the manifest."""
    return {"image_size": self.image_size, "gt_size": self.gt_size,
            "quality": self.quality, "chroma_subsampling": "4:4:4", "huffman": "optimized",
            "resize": "full-resolution decode, PIL bilinear (antialiased)"}


DEFAULT = TrainCopyConfig()  # what `samjax data convert` stores unless told otherwise


def resized_shape(h: int, w: int, side: int) -> tuple[int, int]:
  """SAM's ``ResizeLongestSide.get_preprocess_shape``: longest side -> ``side``."""
  scale = side / max(h, w)
  return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_jpeg(jpeg: bytes, side: int, quality: int) -> tuple[bytes, int, int]:
  """JPEG bytes -> (JPEG bytes, h', w') with the longest side resized to ``side``."""
  with Image.open(io.BytesIO(jpeg)) as im:
    im = im.convert("RGB") if im.mode != "RGB" else im
    h, w = resized_shape(im.height, im.width, side)
    small = im.resize((w, h), Image.BILINEAR)
  buf = io.BytesIO()
  # optimize: Huffman tables fitted to the image, ~3% smaller and a little
  # faster to decode; costs only at conversion.
  small.save(buf, "JPEG", quality=quality, subsampling=0, optimize=True)
  return buf.getvalue(), h, w


def resize_counts(counts: list[str | bytes], h: int, w: int, gh: int, gw: int) -> list[bytes]:
  """N compressed RLEs of size (h, w) -> N compressed RLEs of size (gh, gw).

  The small masks are ``rle.decode_resized`` of the originals (no
  full-resolution mask is built). Raises ``rle.RLEError`` on a bad RLE.
  """
  if not counts:
    return []
  runs, offsets = rle.parse_counts_batch(counts)
  bad = rle.check_counts_batch(runs, offsets, h, w)
  if bad >= 0:
    raise rle.RLEError(f"mask {bad}: runs do not cover the {h}x{w} image")
  small = rle.decode_resized_batch(runs, offsets, h, w, gh, gw)  # (N, gh, gw)
  enc = mask_utils.encode(np.asfortranarray(small.transpose(1, 2, 0)))
  return [e["counts"] for e in enc]


def make(jpeg: bytes, height: int, width: int, counts: list[str | bytes],
         cfg: TrainCopyConfig) -> dict:
  """Feature values of the copies of one image (keys of ``example_codec.TRAIN_FEATURES``).

  Args:
    jpeg: original JPEG bytes, ``height`` x ``width`` pixels.
    counts: the N masks' compressed COCO RLE strings at (height, width).
    cfg: what to store.

  Returns:
    ``{}`` when nothing applies; else ``train/image/*`` keys when the image
    is larger than ``cfg.image_size``, and ``train/mask/*`` keys when
    ``cfg.gt_size`` > 0.
  """
  out: dict = {}
  if cfg.image_size and max(height, width) > cfg.image_size:
    data, h, w = resize_jpeg(jpeg, cfg.image_size, cfg.quality)
    out.update({"train/image/encoded": data, "train/image/height": h,
                "train/image/width": w})
  if cfg.gt_size:
    gh, gw = resized_shape(height, width, cfg.gt_size)
    out.update({"train/mask/counts": resize_counts(counts, height, width, gh, gw),
                "train/mask/height": gh, "train/mask/width": gw})
  return out

"""Mask arithmetic of the annotation tool: brush/eraser strokes, the
stability score, and the PNGs the page draws.

The page never sees logits or embeddings: it gets palette PNGs (one byte per
pixel, a transparent background and translucent colours), which encode in a
few milliseconds and are a few kilobytes per mask.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# SamAutomaticMaskGenerator's default offset for the stability score.
STABILITY_OFFSET = 1.0
# Opacity of a tinted mask (0-255).
ALPHA = 115
# Colours of accepted objects (cycled), of the current mask and of the auto layer.
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195))
CURRENT = (30, 144, 255)
AUTO = (255, 255, 255)
UNCOVERED = (255, 0, 160)


def stability_score(logits: np.ndarray, offset: float = STABILITY_OFFSET) -> float:
  """SAM's stability score of one mask's logits [H, W]: IoU of the masks
  thresholded at +offset and -offset (the generator's, at mask threshold 0)."""
  inner = np.count_nonzero(logits > offset)
  outer = np.count_nonzero(logits > -offset)
  return float(inner / outer) if outer else 0.0


def apply_strokes(mask: np.ndarray, strokes: Sequence[dict]) -> np.ndarray:
  """``mask`` [H, W] bool with brush strokes painted in and eraser strokes
  cleared, in order.

  A stroke is {"mode": "brush" | "erase", "radius": r, "points": [[x, y], ...]}
  in image pixels: a polyline of width 2r with round ends and joints (a
  single point is a disc).
  """
  if not strokes:
    return mask
  canvas = Image.fromarray(mask.astype(np.uint8))
  draw = ImageDraw.Draw(canvas)
  for stroke in strokes:
    fill = 1 if stroke["mode"] == "brush" else 0
    r = float(stroke["radius"])
    pts = [(float(x), float(y)) for x, y in stroke["points"]]
    if len(pts) > 1:
      draw.line(pts, fill=fill, width=max(1, round(2 * r)))
    for x, y in pts:
      draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
  return np.asarray(canvas, dtype=bool)


def check_strokes(strokes) -> list[dict]:
  """The ``strokes`` of a request, checked (one-line ``ValueError`` otherwise)."""
  if strokes is None:
    return []
  if not isinstance(strokes, list):
    raise ValueError("strokes must be a list")
  out = []
  for s in strokes:
    if not isinstance(s, dict) or s.get("mode") not in ("brush", "erase"):
      raise ValueError("a stroke needs mode 'brush' or 'erase'")
    r = float(s.get("radius", 0))
    pts = np.asarray(s.get("points", []), np.float64)
    if not (0 < r <= 4096) or pts.ndim != 2 or pts.shape[1:] != (2,) or not len(pts) \
        or not np.isfinite(pts).all():
      raise ValueError("a stroke needs a radius in (0, 4096] and points [[x, y], ...]")
    out.append({"mode": s["mode"], "radius": r, "points": pts.tolist()})
  return out


def labels_png(labels: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> str:
  """[H, W] uint8 label image (0 = nothing, k = colours[k - 1]) -> base64 PNG
  with 0 transparent and every colour at opacity ``ALPHA``."""
  img = Image.fromarray(labels.astype(np.uint8), mode="P")
  palette = [0, 0, 0]
  for c in colours:
    palette.extend(c)
  img.putpalette(palette)
  buf = io.BytesIO()
  img.save(buf, format="PNG", transparency=bytes([0] + [ALPHA] * len(colours)),
           compress_level=1)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def mask_png(mask: np.ndarray, colour: tuple[int, int, int] = CURRENT) -> str:
  """[H, W] bool -> base64 PNG of the mask tinted ``colour``: a 1-bit palette
  PNG written here (eight pixels per byte before compression: an SA-1B-sized
  mask encodes several times faster than an 8-bit one, which is most of a
  click's time on the server after the decoder)."""
  h, w = mask.shape
  rows = np.packbits(mask.astype(bool), axis=1)
  raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter 0 per row
  png = b"".join((
      b"\x89PNG\r\n\x1a\n",
      _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 3, 0, 0, 0)),
      _chunk(b"PLTE", bytes((0, 0, 0, *colour))),
      _chunk(b"tRNS", bytes((0, ALPHA))),
      _chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)),
      _chunk(b"IEND", b"")))
  return base64.b64encode(png).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def layer_png(masks: Sequence[np.ndarray], shape: tuple[int, int], colours=PALETTE
              ) -> str | None:
  """Masks drawn in order (later on top), each its own colour; None if none."""
  if not masks:
    return None
  labels = np.zeros(shape, np.uint8)
  for i, m in enumerate(masks):
    labels[m] = i % len(colours) + 1
  return labels_png(labels, colours[:min(len(masks), len(colours))])


def decode_png(data: bytes) -> np.ndarray:
  """A PNG's pixels as a numpy array (palette indices for mode P)."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im)

"""PNG overlays of masks and prompts (for the CLI, demos and reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array([[255, 64, 64], [64, 160, 255], [64, 220, 120], [255, 200, 40],
                    [200, 80, 255], [40, 220, 220]], np.float32)


def overlay_masks(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5,
                  points: np.ndarray | None = None, labels: np.ndarray | None = None,
                  boxes: np.ndarray | None = None, captions: Sequence[str] = ()
                  ) -> Image.Image:
  """HxWx3 uint8 + masks (each HxW bool) -> PIL image with tinted masks and
  outlines; positive points green, negative red, boxes yellow."""
  out = image.astype(np.float32).copy()
  for i, mask in enumerate(masks):
    color = PALETTE[i % len(PALETTE)]
    out[mask] = (1 - alpha) * out[mask] + alpha * color
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) &
                    np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out[edge] = color
  img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  r = max(3, round(min(image.shape[:2]) / 80))
  if points is not None:
    for (x, y), lab in zip(np.asarray(points), np.asarray(labels)):
      fill = (40, 230, 40) if lab == 1 else (230, 40, 40)
      draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
  if boxes is not None:
    for box in np.asarray(boxes).reshape(-1, 4):
      draw.rectangle([float(v) for v in box], outline=(255, 230, 0), width=max(2, r // 2))
  for i, text in enumerate(captions):
    draw.text((4, 4 + 12 * i), text, fill=(255, 255, 255))
  return img


def side_by_side(panels: Sequence[Image.Image]) -> Image.Image:
  """Concatenates equally tall images horizontally."""
  w = sum(p.width for p in panels)
  out = Image.new("RGB", (w, panels[0].height))
  x = 0
  for p in panels:
    out.paste(p, (x, 0))
    x += p.width
  return out

"""Edge non-maximum suppression: thins an edge-strength map to 1-pixel ridges.

The standard lightweight postprocessing of the structured-edge toolbox
(``edgesDetect`` + ``edgesNmsMex``), which HED and later detectors (and, by
its description, SAM) apply before the BSDS benchmark. Exactly:

  1. ``E = convTri(E, 1)``: a [1 2 1]/4 smoothing along each axis;
  2. orientation of the edge *normal* from second derivatives of a more
     smoothed copy: ``S = convTri(E, 4)`` (triangle [1 2 3 4 5 4 3 2 1]/25),
     first derivatives ``Ox, Oy`` (central differences, one-sided at the
     border: MATLAB ``gradient``), then ``Oxx = d Ox/dx``, ``Oxy = d Oy/dx``,
     ``Oyy = d Oy/dy`` and ``O = mod(atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)), pi)``
     (x = column, y = row);
  3. a pixel is zeroed when ``1.01 * E`` is smaller than ``E`` bilinearly
     sampled at distance 1 on either side along the normal
     ``(cos O, sin O)`` (samples clamped to [0, size - 1.001], the original
     ``E`` is compared, never the partly suppressed one);
  4. the ``s = 5`` pixels nearest each image border are scaled by
     ``d / s`` (d = distance to the border, so the border itself is 0).

Convolutions pad by symmetric reflection (``convTri``'s ``imPad 'symmetric'``).

Deviation: MATLAB's ``sign(0)`` is 0, which sets ``O = 0`` (compare along
x) wherever ``Oxy`` is exactly zero, e.g. along a perfectly horizontal edge
in a synthetic image, so such an edge is never thinned. Here ``sign(0)`` is
+1; real edge maps essentially never have ``Oxy == 0`` exactly, so the
result is otherwise the toolbox's.
"""

from __future__ import annotations

import numpy as np


def conv_tri(image: np.ndarray, r: int) -> np.ndarray:
  """Triangle-filter smoothing of [H, W] with radius ``r`` (toolbox ``convTri``
  for integer r >= 1: kernel [1..r, r+1, r..1] / (r+1)^2 on each axis)."""
  r = int(r)
  if r < 1:
    raise ValueError(f"conv_tri radius must be >= 1, got {r}")
  f = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float64)
  f /= (r + 1) ** 2
  x = np.pad(np.asarray(image, np.float64), r, mode="symmetric")
  # 'valid' correlation along each axis (the kernel is symmetric).
  x = sum(f[i] * x[i:i + x.shape[0] - 2 * r] for i in range(2 * r + 1))
  x = sum(f[i] * x[:, i:i + x.shape[1] - 2 * r] for i in range(2 * r + 1))
  return x


def edge_orientation(edges: np.ndarray) -> np.ndarray:
  """[H, W] edge strength -> [H, W] angle in [0, pi) of the edge normal,
  measured from the x (column) axis towards y (rows)."""
  s = conv_tri(edges, 4)
  oy, ox = np.gradient(s)
  oxx = np.gradient(ox, axis=1)
  oxy, oyy = np.gradient(oy, axis=1), np.gradient(oy, axis=0)
  sign = np.where(oxy > 0, -1.0, 1.0)  # sign(-Oxy), with sign(0) = +1
  return np.mod(np.arctan(oyy * sign / (oxx + 1e-5)), np.pi)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """``image`` at (x, y) per the toolbox's ``interp``: clamped into the image."""
  h, w = image.shape
  x = np.clip(x, 0, w - 1.001)
  y = np.clip(y, 0, h - 1.001)
  x0, y0 = x.astype(np.int64), y.astype(np.int64)
  dx, dy = x - x0, y - y0
  return (image[y0, x0] * (1 - dx) * (1 - dy) + image[y0, x0 + 1] * dx * (1 - dy)
          + image[y0 + 1, x0] * (1 - dx) * dy + image[y0 + 1, x0 + 1] * dx * dy)


def border_ramp(n: int, s: int) -> np.ndarray:
  """[n] weights: d / s for the s entries nearest either end (d = distance
  to that end, so the ends are 0), 1 elsewhere."""
  ramp = np.ones(n)
  k = np.arange(s)
  ramp[k] *= k / s
  ramp[n - 1 - k] *= k / s
  return ramp


def edge_nms(edges: np.ndarray, r: int = 1, s: int = 5, m: float = 1.01) -> np.ndarray:
  """Thins [H, W] edge strength (>= 0) to ridges along the edge normal.

  Args:
    edges: [H, W] edge strength; r: suppression radius (pixels along the
      normal); s: border ramp width; m: tolerance multiplier (>1 keeps
      near-ties).
  Returns:
    [H, W] float32: the smoothed strength on ridge pixels, 0 elsewhere.
  """
  e = np.asarray(edges, np.float64)
  if e.ndim != 2 or min(e.shape) < 2:
    raise ValueError(f"edge map must be 2-D and at least 2x2, got shape {e.shape}")
  e = conv_tri(e, 1)
  o = edge_orientation(e)
  h, w = e.shape
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  cos_o, sin_o = np.cos(o), np.sin(o)
  keep = e != 0
  for d in range(-r, r + 1):
    if d:
      keep &= ~(e * m < _bilinear(e, xx + d * cos_o, yy + d * sin_o))
  out = np.where(keep, e, 0.0)
  s = min(s, w // 2, h // 2)
  out *= border_ramp(h, s)[:, None] * border_ramp(w, s)[None, :]
  return out.astype(np.float32)

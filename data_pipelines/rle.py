"""COCO run-length masks: parse, validate and rasterise at a reduced size.

SA-1B stores each mask as a COCO *compressed* RLE: ``{"size": [h, w],
"counts": str}``. The counts are run lengths over the mask flattened in
column-major (Fortran) order, starting with a run of zeros; the string packs
them 5 bits per character (pycocotools ``rleToString``), every count after
the second stored as a delta to the count two places earlier.

Decoding 64 full-resolution (1500x2250) masks with pycocotools costs ~24x the
JPEG decode (DESIGN.md), and a training step only needs them at the loss
resolution (256 or 1024 on the padded square). ``decode_resized`` rasterises
the runs straight into the small grid (nearest-neighbour sampling of the
full-resolution mask, exactly equal to ``pycocotools.mask.decode(rle)[rows][:,
cols]``) in O(runs + out_h * out_w), never building the full mask.
"""

from __future__ import annotations

import numpy as np


class RLEError(ValueError):
  """A malformed or inconsistent RLE (the message names what is wrong)."""


def parse_counts(counts: str | bytes) -> np.ndarray:
  """Compressed COCO RLE string -> run lengths, int64 array of shape (R,).

  Vectorised port of pycocotools' ``rleFrString``. Raises ``RLEError`` on a
  string that is empty-but-unterminated or contains characters outside the
  alphabet.
  """
  if isinstance(counts, str):
    counts = counts.encode("ascii", errors="strict")
  if not counts:
    return np.zeros((0,), np.int64)
  b = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
  if b.min() < 0 or b.max() > 63:
    raise RLEError("RLE counts string has characters outside the COCO alphabet")
  more = (b & 0x20) != 0
  if more[-1]:
    raise RLEError("RLE counts string ends inside a value (truncated)")
  ends = np.flatnonzero(~more)
  starts = np.concatenate([[0], ends[:-1] + 1])
  lengths = ends - starts + 1
  if lengths.max() > 12:
    raise RLEError("RLE counts string has a value longer than 60 bits")
  pos = np.arange(len(b)) - np.repeat(starts, lengths)
  vals = np.add.reduceat((b & 0x1f) << (5 * pos), starts)
  neg = (b[ends] & 0x10) != 0
  vals[neg] |= -1 << (5 * lengths[neg])
  # counts[m] += counts[m - 2] for m > 2: running sums over odd positions from
  # index 1 and over even positions from index 2.
  out = vals.copy()
  out[1::2] = np.cumsum(vals[1::2])
  if len(vals) > 2:
    out[2::2] = np.cumsum(vals[2::2])
  return out


def check_counts(runs: np.ndarray, h: int, w: int) -> None:
  """Raises ``RLEError`` unless ``runs`` are non-negative and sum to h*w."""
  if len(runs) and runs.min() < 0:
    raise RLEError("RLE has a negative run length")
  total = int(runs.sum())
  if total != h * w:
    raise RLEError(f"RLE runs cover {total} pixels, size says {h}x{w}={h * w}")


def area(runs: np.ndarray) -> int:
  """Number of foreground pixels (the odd-indexed runs)."""
  return int(runs[1::2].sum())


def sample_grid(size: int, out: int) -> np.ndarray:
  """Source indices sampled by nearest-neighbour resizing ``size`` -> ``out``.

  Pixel ``i`` of the output takes source pixel ``floor((i + 0.5) * size /
  out)`` (pixel centres aligned, as PIL/jax ``nearest`` do). Shape (out,).
  """
  idx = ((np.arange(out, dtype=np.float64) + 0.5) * (size / out)).astype(np.int64)
  return np.minimum(idx, size - 1)


def decode_resized(runs_list: list[np.ndarray], h: int, w: int, out_h: int,
                   out_w: int) -> np.ndarray:
  """Rasterises N masks of size (h, w) at (out_h, out_w) without decoding them.

  Args:
    runs_list: N arrays of run lengths (``parse_counts``), each summing to h*w.
    h, w: source mask size.
    out_h, out_w: output size (smaller or larger than the source).

  Returns:
    uint8 array (N, out_h, out_w) of {0, 1}, equal to the full-resolution
    masks sampled at ``sample_grid(h, out_h)`` rows and ``sample_grid(w,
    out_w)`` columns.
  """
  n = len(runs_list)
  out = np.zeros((n, out_w, out_h + 1), np.int8)
  if n == 0 or out_h == 0 or out_w == 0:
    return out[:, :, :out_h].transpose(0, 2, 1)
  rows = sample_grid(h, out_h)
  cols = sample_grid(w, out_w)
  starts, stops, owner = [], [], []
  for k, runs in enumerate(runs_list):
    bounds = np.cumsum(runs)
    s = bounds[0::2][: len(runs) // 2]
    e = bounds[1::2]
    keep = e > s
    starts.append(s[keep])
    stops.append(e[keep])
    owner.append(np.full(int(keep.sum()), k, np.int64))
  s = np.concatenate(starts)
  e = np.concatenate(stops)
  m = np.concatenate(owner)
  # Split every foreground run at column boundaries (column-major order).
  c0 = s // h
  ncol = (e - 1) // h - c0 + 1
  rep = np.repeat(np.arange(len(s)), ncol)
  col = c0[rep] + (np.arange(len(rep)) - np.repeat(np.cumsum(ncol) - ncol, ncol))
  a = np.maximum(s[rep], col * h) - col * h
  b = np.minimum(e[rep], (col + 1) * h) - col * h
  m = m[rep]
  # Output columns sampling this source column, output rows inside [a, b).
  j_lo = np.searchsorted(cols, col, "left")
  nj = np.searchsorted(cols, col, "right") - j_lo
  i_lo = np.searchsorted(rows, a, "left")
  i_hi = np.searchsorted(rows, b, "left")
  keep = (nj > 0) & (i_hi > i_lo)
  j_lo, nj, i_lo, i_hi, m = j_lo[keep], nj[keep], i_lo[keep], i_hi[keep], m[keep]
  if np.any(nj > 1):  # upsampling: one source column feeds several outputs
    rep = np.repeat(np.arange(len(nj)), nj)
    j = j_lo[rep] + (np.arange(len(rep)) - np.repeat(np.cumsum(nj) - nj, nj))
    i_lo, i_hi, m = i_lo[rep], i_hi[rep], m[rep]
  else:
    j = j_lo
  base = (m * out_w + j) * (out_h + 1)
  flat = out.reshape(-1)
  # Within one output column the pieces are disjoint and ordered, so starts
  # are unique and stops are unique: plain fancy-index updates suffice.
  flat[base + i_lo] += 1
  flat[base + i_hi] -= 1
  np.cumsum(out, axis=2, dtype=np.int8, out=out)
  return out[:, :, :out_h].view(np.uint8).transpose(0, 2, 1)

"""Fixed-shape device programs of the automatic mask generator.

Three jitted stages, each compiled once per shape class (not per image):

  decode_points   a batch of single-point prompts -> low-res logits + IoU
                  (whole batch in one program, prompts chunked inside);
  mask_stats      a fixed-size gather of those logits -> upscaled to the crop
                  frame -> stability score and box (full-res masks never leave
                  the device);
  binary_masks    the same upscaling for the final survivors -> bool masks;
  nms             greedy box NMS (torchvision semantics) over a padded set.

Crop frames are padded to a size class (``size_class``) and the upscaling
matrices are arguments, not constants, so every crop and image of a class
shares one compiled program; padded rows/columns are masked out exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from samjax.decoding.interactive import ImageState, InteractivePlan
from samjax.inference.transforms import postprocess_matrices
from samjax.model.prompts import Prompts

# Crop frames are padded up to a multiple of this (one program per class).
SIZE_MULTIPLE = 64
# Upscaled logits per mask-stats call are kept under about this many floats.
UPSCALE_BUDGET = 48 * 2 ** 20


def size_class(h: int, w: int) -> tuple[int, int]:
  """Padded (H, W) of a crop frame: both rounded up to SIZE_MULTIPLE."""
  r = lambda n: -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE
  return r(h), r(w)


def gather_size(hp: int, wp: int) -> int:
  """Masks per mask-stats / binary-masks call for a size class: a power of
  two in [4, 64] whose upscaled logits fit UPSCALE_BUDGET."""
  k = 64
  while k > 4 and k * hp * wp > UPSCALE_BUDGET:
    k //= 2
  return k


def upscale_operands(low: int, image_size: int, input_size: tuple[int, int],
                     crop_size: tuple[int, int]):
  """Row/column matrices of the official post-processing for one crop,
  zero-padded to its size class: ([Hp, low], [Wp, low], valid_h [Hp], valid_w [Wp])."""
  rows, cols = postprocess_matrices(low, image_size, tuple(input_size), tuple(crop_size))
  hp, wp = size_class(*crop_size)
  h, w = crop_size
  rows_p = np.zeros((hp, low), np.float32)
  cols_p = np.zeros((wp, low), np.float32)
  rows_p[:h], cols_p[:w] = rows, cols
  return rows_p, cols_p, np.arange(hp) < h, np.arange(wp) < w


def crop_mask_grid(rows: np.ndarray, cols: np.ndarray, grid: int) -> tuple[int, int]:
  """The top-left (gh, gw) cells of the grid x grid embedding whose low-res
  logits the crop's upscaling reads (``upscale_operands``' rows [Hp, L] and
  cols [Wp, L] are zero past the resized image), rounded up to a multiple of
  grid / 16 so crop geometries share decode programs (16 extents per axis
  at most; finer steps save little: on a 3:2 photo 44 of 64 rows instead
  of 48 saved 3.5 % of the generator's decode time, 48 instead of 64: 9 %).

  The resized image fills the padded model input only along its long side:
  on a 3:2 photo a third of the grid's rows is padding, which the generator
  need not upscale into masks (``decode_points(..., mask_grid=)``).
  """
  low = rows.shape[1]
  cell = low // grid  # low-res pixels per grid cell (4)
  step = max(1, grid // 16)

  def extent(m):
    used = np.flatnonzero(np.any(m != 0, axis=0))
    n = -(-(int(used[-1]) + 1 if len(used) else 1) // cell)
    return min(grid, -(-n // step) * step)
  return extent(rows), extent(cols)


@functools.partial(jax.jit, static_argnames=("plan",))
def embed(params, images, image_pe, *, plan: InteractivePlan):
  """[B, 3, S, S] preprocessed crops -> the plan's ``ImageState`` of each
  (a list of B states of one image each, shared by all generators)."""
  embeddings = plan.model.embed_images(params, images)
  return [plan.prepare(params, embeddings[i:i + 1], image_pe) for i in range(len(images))]


@functools.partial(jax.jit, static_argnames=("plan", "mask_grid"))
def decode_points(params, state: ImageState, coords, *, plan: InteractivePlan,
                  mask_grid: tuple[int, int] | None = None):
  """One image's state, coords [P, 2] (input frame) -> low-res logits
  [P*3, L, L] and IoU predictions [P*3], point-major (the official order).

  ``mask_grid`` (gh, gw) (see ``crop_mask_grid``): only the top-left [4gh, 4gw]
  logits are decoded, the rest are returned as 0 (the crop's upscaling
  gives them weight 0)."""
  p = coords.shape[0]
  prompts = Prompts.create(coords[None, :, None, :].astype(jnp.float32),
                           jnp.ones((1, p, 1), jnp.int32))
  logits, iou = plan.decode(params, state, prompts, True, mask_grid=mask_grid)
  logits = logits[0].reshape(p * 3, *logits.shape[-2:])
  low = 4 * state.embeddings.shape[1]
  logits = jnp.pad(logits, ((0, 0), (0, low - logits.shape[1]), (0, low - logits.shape[2])))
  return logits, iou[0].reshape(p * 3)


def _upscale(low, rows, cols, valid_h, valid_w):
  """[K, L, L] -> ([K, Hp, Wp] logits in the crop frame, [Hp, Wp] validity)."""
  x = jnp.einsum("hi,kij->khj", rows, low)
  x = jnp.einsum("khj,wj->khw", x, cols)
  return x, valid_h[:, None] & valid_w[None, :]


def _boxes(masks):
  """[K, Hp, Wp] bool -> [K, 4] int32 xyxy, inclusive; zeros for empty masks
  (official ``batched_mask_to_box``)."""
  def edges(any_):
    n = any_.shape[-1]
    idx = jnp.arange(n, dtype=jnp.int32)
    hi = jnp.max(jnp.where(any_, idx, 0), axis=-1)
    lo = jnp.min(jnp.where(any_, idx, n), axis=-1)
    return lo, hi
  top, bottom = edges(masks.any(axis=2))
  left, right = edges(masks.any(axis=1))
  box = jnp.stack([left, top, right, bottom], axis=-1)
  empty = (right < left) | (bottom < top)
  return jnp.where(empty[:, None], 0, box)


@jax.jit
def mask_stats(low, idx, rows, cols, valid_h, valid_w, offset):
  """Stability score and box of K gathered masks.

  Args:
    low: [N, L, L] low-res logits; idx: [K] int32 rows of ``low`` to use.
    rows, cols, valid_h, valid_w: ``upscale_operands`` of the crop.
    offset: stability offset (official ``stability_score_offset``).
  Returns:
    gathered low-res logits [K, L, L] (kept for ``binary_masks``),
    stability [K] float32 (NaN for a mask empty at threshold -offset, as the
    official 0/0), boxes [K, 4] int32 xyxy in the crop frame.
  """
  g = jnp.take(low, idx, axis=0)
  x, valid = _upscale(g, rows, cols, valid_h, valid_w)
  # mask_threshold is 0.0 in every SAM checkpoint.
  inter = jnp.sum((x > offset) & valid, axis=(1, 2), dtype=jnp.int32)
  union = jnp.sum((x > -offset) & valid, axis=(1, 2), dtype=jnp.int32)
  stability = inter.astype(jnp.float32) / union.astype(jnp.float32)
  return g, stability, _boxes((x > 0.0) & valid)


@jax.jit
def binary_masks(low, idx, rows, cols, valid_h, valid_w):
  """[N, L, L] low-res logits, idx [K] -> [K, Hp, Wp] bool masks (crop frame)."""
  x, valid = _upscale(jnp.take(low, idx, axis=0), rows, cols, valid_h, valid_w)
  return (x > 0.0) & valid


def _strictly_above(x, thresh: float):
  """float32 ``x > thresh`` with ``thresh`` a double, as torchvision's C++
  kernel compares (rounding the threshold to float32 first could flip ties)."""
  t32 = np.float32(thresh)
  return x >= t32 if float(t32) > thresh else x > t32


@functools.partial(jax.jit, static_argnames=("iou_thresh",))
def nms(boxes, scores, valid, *, iou_thresh: float):
  """Greedy NMS with torchvision ``nms`` semantics over a padded set.

  Args:
    boxes: [N, 4] float32 xyxy; scores: [N] float32; valid: [N] bool.
  Returns:
    (order [N] int32: indices by descending score, ties in input order,
     keep [N] bool aligned with ``order``). The kept indices, in
     torchvision's output order, are ``order[keep]``.
  """
  n = boxes.shape[0]
  # Stable descending sort, padding last: lexsort's last key is primary.
  order = jnp.lexsort((-scores, ~valid)).astype(jnp.int32)
  b = boxes[order]
  area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  pos = jnp.arange(n)

  def body(i, keep):
    xx1 = jnp.maximum(b[i, 0], b[:, 0])
    yy1 = jnp.maximum(b[i, 1], b[:, 1])
    xx2 = jnp.minimum(b[i, 2], b[:, 2])
    yy2 = jnp.minimum(b[i, 3], b[:, 3])
    inter = jnp.maximum(0.0, xx2 - xx1) * jnp.maximum(0.0, yy2 - yy1)
    # Degenerate boxes give 0/0 = NaN, which suppresses nothing (as torch).
    ovr = inter / (area[i] + area - inter)
    hit = _strictly_above(ovr, iou_thresh) & (pos > i)
    return jnp.where(keep[i], keep & ~hit, keep)

  keep = jax.lax.fori_loop(0, n, body, valid[order])
  return order, keep


def nms_host(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
  """Kept indices (descending score) of [K, 4] boxes; pads K to a power of two
  >= 64 so a handful of programs serve every count."""
  k = len(boxes)
  if k == 0:
    return np.zeros((0,), np.int64)
  n = max(64, 1 << (k - 1).bit_length())
  b = np.zeros((n, 4), np.float32)
  s = np.zeros((n,), np.float32)
  b[:k], s[:k] = boxes, scores
  order, keep = nms(b, s, np.arange(n) < k, iou_thresh=float(iou_thresh))
  order, keep = jax.device_get((order, keep))
  return order[keep].astype(np.int64)

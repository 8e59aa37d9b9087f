"""BSDS500 boundary benchmark: per-image counts and ODS / OIS / AP / R50.

Follows the benchmark as the structured-edge toolbox implements it
(``edgesEvalImg`` / ``edgesEvalDir``, whose defaults reproduce the BSDS500
``boundaryBench``; HED, SAM and most edge papers report these numbers):

Per image, for each of T thresholds ``t_k = linspace(1/(T+1), 1 - 1/(T+1), T)``
(T = 99):
  1. ``E >= t_k``, thinned to 1-pixel lines (``bwmorph(.., 'thin', inf)``;
     here ``skimage.morphology.thin``, the same two-subiteration algorithm);
  2. matched one-to-one against each annotator's boundary map within
     ``max_dist`` x the image diagonal (``edges_match``);
  3. ``cntR`` = matched boundary pixels summed over annotators, ``sumR`` =
     boundary pixels summed over annotators (recall is thus pooled over the
     annotators); ``cntP`` = predicted pixels matched to *any* annotator,
     ``sumP`` = predicted pixels.

Over the dataset (``R = cntR / sumR``, ``P = cntP / sumP``,
``F = 2PR / (P + R)``, each denominator floored at machine epsilon):
  ODS  the best F of the dataset-summed counts, searched on the straight
       line between consecutive thresholds' (R, P) points at 100 steps;
  OIS  each image's counts at its own best threshold (first maximum of F,
       no interpolation), summed, then one F;
  AP   precision interpolated linearly in recall at recall 0, 0.01, .., 1
       (where recall is in range), summed and divided by 100 (the toolbox's
       "minor bug": 101 samples over 100); duplicate recalls keep the first
       threshold's point (MATLAB ``unique``);
  R50  recall interpolated at precision ``max(0.5, min P)``.

Deviation: where the precision never reaches 0.5 the toolbox's R50 is NaN;
here it is 0.0 (no operating point reaches 50% precision), so results stay
in [0, 1] and valid JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from skimage.morphology import thin

from samjax.evaluation.edges_match import BoundaryMatcher

# MATLAB's eps: the floor of every denominator in the toolbox.
EPS = float(np.finfo(np.float64).eps)
COUNT_KEYS = ("cnt_r", "sum_r", "cnt_p", "sum_p")


def thresholds(n: int) -> np.ndarray:
  """The benchmark's ``n`` thresholds, evenly spaced strictly inside (0, 1)."""
  if n < 1:
    raise ValueError(f"the number of thresholds must be >= 1, got {n}")
  return np.linspace(1 / (n + 1), 1 - 1 / (n + 1), n)


def image_counts(edges: np.ndarray, boundaries: Sequence[np.ndarray], n_thresholds: int = 99,
                 max_dist: float = 0.0075, thin_edges: bool = True) -> dict[str, list[int]]:
  """Counts of one image at each threshold.

  Args:
    edges: [H, W] edge strength in [0, 1].
    boundaries: one [H, W] bool boundary map per annotator.
    n_thresholds: T; max_dist: tolerance as a fraction of the image diagonal;
    thin_edges: thin each thresholded map (the benchmark default).
  Returns:
    {"cnt_r", "sum_r", "cnt_p", "sum_p"}: T ints each, threshold ascending.
  """
  edges = np.asarray(edges, np.float64)
  if edges.ndim != 2:
    raise ValueError(f"edge map must be 2-D, got shape {edges.shape}")
  if not boundaries:
    raise ValueError("no ground-truth boundary map given")
  for b in boundaries:
    if np.shape(b) != edges.shape:
      raise ValueError(f"edge map {edges.shape} and ground truth {np.shape(b)} differ in size")
  matchers = [BoundaryMatcher(b, max_dist) for b in boundaries]
  sum_r = sum(m.n_gt for m in matchers)
  out = {k: [] for k in COUNT_KEYS}
  for t in thresholds(n_thresholds):
    binary = edges >= max(EPS, t)
    if thin_edges:
      binary = thin(binary)
    matched_any = np.zeros(edges.shape, bool)
    cnt_r = 0
    for m in matchers:
      matched_pred, matched_gt = m.match(binary)
      matched_any |= matched_pred
      cnt_r += int(matched_gt.sum())
    out["cnt_r"].append(cnt_r)
    out["sum_r"].append(int(sum_r))
    out["cnt_p"].append(int(matched_any.sum()))
    out["sum_p"].append(int(binary.sum()))
  return out


def _rpf(cnt_r, sum_r, cnt_p, sum_p):
  r = np.asarray(cnt_r, np.float64) / np.maximum(EPS, sum_r)
  p = np.asarray(cnt_p, np.float64) / np.maximum(EPS, sum_p)
  return r, p, 2 * p * r / np.maximum(EPS, p + r)


def _best_interpolated(t, r, p) -> tuple[float, float, float, float]:
  """(F, P, R, threshold) at the best point on the segments between
  consecutive thresholds, 100 steps each (toolbox ``findBestRPF``)."""
  if len(t) == 1:
    return float(2 * p[0] * r[0] / max(EPS, p[0] + r[0])), float(p[0]), float(r[0]), float(t[0])
  a = np.linspace(0, 1, 100)[None]
  rj = r[1:, None] * a + r[:-1, None] * (1 - a)
  pj = p[1:, None] * a + p[:-1, None] * (1 - a)
  tj = t[1:, None] * a + t[:-1, None] * (1 - a)
  fj = 2 * pj * rj / np.maximum(EPS, pj + rj)
  # First maximum in (segment, step) order, as the toolbox's strict '>' loop.
  k = int(np.argmax(fj))
  return float(fj.flat[k]), float(pj.flat[k]), float(rj.flat[k]), float(tj.flat[k])


def _average_precision(r, p) -> float:
  r_u, first = np.unique(r, return_index=True)
  if len(r_u) <= 1:
    return 0.0
  grid = np.linspace(0, 1, 101)
  inside = (grid >= r_u[0]) & (grid <= r_u[-1])
  return float(np.interp(grid[inside], r_u, p[first]).sum() / 100)


def _recall_at_half_precision(r, p) -> float:
  p_u, first = np.unique(p, return_index=True)
  q = max(float(p_u[0]), 0.5)
  if q > p_u[-1]:
    return 0.0
  return float(np.interp(q, p_u, r[first]))


def dataset_scores(per_image: Iterable[dict], n_thresholds: int) -> dict[str, float]:
  """ODS / OIS / AP / R50 (and the P, R, threshold behind ODS and OIS) from
  the ``image_counts`` of every image."""
  t = thresholds(n_thresholds)
  totals = {k: np.zeros(n_thresholds, np.int64) for k in COUNT_KEYS}
  ois = dict.fromkeys(COUNT_KEYS, 0)
  n = 0
  for counts in per_image:
    c = {k: np.asarray(counts[k], np.int64) for k in COUNT_KEYS}
    if any(len(v) != n_thresholds for v in c.values()):
      raise ValueError(f"per-image counts have {len(c['cnt_r'])} thresholds, "
                       f"expected {n_thresholds}")
    for k in COUNT_KEYS:
      totals[k] += c[k]
    _, _, f = _rpf(*(c[k] for k in COUNT_KEYS))
    best = int(np.argmax(f))
    for k in COUNT_KEYS:
      ois[k] += int(c[k][best])
    n += 1
  if n == 0:
    raise ValueError("no image results to score")
  r, p, _ = _rpf(*(totals[k] for k in COUNT_KEYS))
  ods_f, ods_p, ods_r, ods_t = _best_interpolated(t, r, p)
  ois_r, ois_p, ois_f = (float(v) for v in _rpf(*(ois[k] for k in COUNT_KEYS)))
  return {"ods": ods_f, "ois": ois_f, "ap": _average_precision(r, p),
          "r50": _recall_at_half_precision(r, p), "ods_precision": ods_p,
          "ods_recall": ods_r, "ods_threshold": ods_t, "ois_precision": ois_p,
          "ois_recall": ois_r, "n_images": n}

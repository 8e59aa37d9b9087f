"""One-to-one matching of edge pixels within a distance tolerance.

The counterpart of the BSDS benchmark's ``correspondPixels(E, G, maxDist)``:
a predicted edge pixel and a ground-truth boundary pixel may be matched when
they lie at most ``max_dist * diagonal`` pixels apart (Euclidean, between
pixel centres), and every pixel is matched at most once. Precision and recall
count matched pixels, so a doubled edge cannot match one boundary twice.

How the matching is found (and how it differs from the benchmark): the
benchmark solves a min-cost perfect matching with its CSA assignment solver
on a graph augmented with high-cost "outlier" nodes; the outlier cost
(100 x the tolerance) makes it match as many pixels as possible first and
prefer short distances second. Here the candidate pairs within the tolerance
form a sparse bipartite graph and scipy's Hopcroft-Karp
(``maximum_bipartite_matching``) finds a maximum-cardinality matching. Its
first phase matches rows greedily in row order, each to the first free
column of its list, so the rows (predicted pixels) are ordered by the
distance to their nearest candidate and each row's candidates by distance:
that phase is a nearest-first greedy matching, and the later phases only add
augmenting paths. The number of matched pixels per ground truth is therefore
the benchmark's (both are maximum matchings); which predicted pixels are
matched can differ where several choices are equally large, which can only
change the precision numerator when several annotators' matches are united
(``edges_metrics``). No Euclidean-cost optimum is computed: a min-cost
solve (scipy's LAPJVsp on the augmented graph) took minutes per 481x321
map, Hopcroft-Karp takes milliseconds.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_bipartite_matching


def tolerance_pixels(shape: tuple[int, int], max_dist: float) -> float:
  """The matching radius in pixels: ``max_dist`` times the image diagonal."""
  if not max_dist > 0:
    raise ValueError(f"max_dist must be > 0 (a fraction of the image diagonal), got {max_dist}")
  return float(max_dist) * math.hypot(*shape)


@functools.lru_cache(maxsize=16)
def disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Integer offsets (dy [K], dx [K]) with dy^2 + dx^2 <= radius^2 and their
  lengths [K], shortest first (ties in raster order of the offset)."""
  r = math.floor(radius)
  dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
  dy, dx = dy.ravel(), dx.ravel()
  dist = np.hypot(dy, dx)
  inside = dist <= radius + 1e-9
  dy, dx, dist = dy[inside], dx[inside], dist[inside]
  order = np.argsort(dist, kind="stable")
  return dy[order], dx[order], dist[order]


class BoundaryMatcher:
  """Matches predicted edge maps against one fixed ground-truth boundary map.

  Built once per annotator and image, used for every threshold: the index
  image of the ground-truth pixels and the set of pixels near any of them
  (the only predicted pixels that can match) are computed once.

  Args:
    gt: [H, W] bool boundary map of one annotator.
    max_dist: tolerance as a fraction of the image diagonal (BSDS: 0.0075).
  """

  def __init__(self, gt: np.ndarray, max_dist: float):
    gt = np.asarray(gt, bool)
    if gt.ndim != 2:
      raise ValueError(f"ground truth must be a 2-D boundary map, got shape {gt.shape}")
    self.shape = gt.shape
    self.radius = tolerance_pixels(gt.shape, max_dist)
    self._dy, self._dx, self._dist = disk_offsets(self.radius)
    self._pad = math.floor(self.radius)
    gy, gx = np.nonzero(gt)
    self.n_gt = len(gy)
    self._gt_flat = gy * gt.shape[1] + gx
    p = self._pad
    # -1 where there is no boundary pixel; padded so every offset stays
    # inside, and flat: one gather per candidate instead of two.
    self._wp = gt.shape[1] + 2 * p
    index = np.full((gt.shape[0] + 2 * p, self._wp), -1, np.int32)
    index[gy + p, gx + p] = np.arange(self.n_gt)
    self._index = index.ravel()
    self._offsets = (self._dy * self._wp + self._dx).astype(np.int64)
    if self.n_gt:
      self._near = ndimage.distance_transform_edt(~gt) <= self.radius + 1e-9
    else:
      self._near = np.zeros(gt.shape, bool)

  def match(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] bool predicted edges -> (matched predicted pixels [H, W] bool,
    matched boundary pixels [H, W] bool); both have the same count."""
    pred = np.asarray(pred, bool)
    if pred.shape != self.shape:
      raise ValueError(f"edge map {pred.shape} and ground truth {self.shape} differ in size")
    matched_pred = np.zeros(self.shape, bool)
    matched_gt = np.zeros(self.shape, bool)
    py, px = np.nonzero(pred & self._near)
    if len(py) == 0:
      return matched_pred, matched_gt
    p = self._pad
    cand = self._index[((py + p) * self._wp + px + p)[:, None] + self._offsets[None]]
    valid = cand >= 0
    # Rows nearest-first (stable: raster order among equals), so that the
    # matcher's greedy first phase takes the shortest pairs first.
    order = np.argsort(self._dist[np.argmax(valid, axis=1)], kind="stable")
    cand, valid, py, px = cand[order], valid[order], py[order], px[order]
    indptr = np.zeros(len(py) + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=indptr[1:])
    # Built from (data, indices, indptr): scipy keeps each row's column order.
    graph = sparse.csr_array((np.ones(int(indptr[-1]), np.int8),
                              cand[valid], indptr),
                             shape=(len(py), self.n_gt))
    to_gt = maximum_bipartite_matching(graph, perm_type="column")
    hit = to_gt >= 0
    matched_pred[py[hit], px[hit]] = True
    matched_gt.flat[self._gt_flat[to_gt[hit]]] = True
    return matched_pred, matched_gt


def correspond_pixels(pred: np.ndarray, gt: np.ndarray, max_dist: float
                      ) -> tuple[np.ndarray, np.ndarray]:
  """One-to-one matching of two [H, W] bool edge maps within
  ``max_dist * diagonal`` pixels -> (matched pred [H, W], matched gt [H, W])."""
  return BoundaryMatcher(gt, max_dist).match(pred)

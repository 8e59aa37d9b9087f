"""BSDS boundary benchmark: one-to-one matching and ODS / OIS / AP / R50 on hand-checkable maps.

Maps are 200x300: the default tolerance 0.0075 x diagonal is 2.70 px, so a
1-px shift matches and a 6-px shift cannot. Binary maps give the same counts
at every threshold, so those tests use 9 thresholds instead of 99 (speed).
"""

import numpy as np
import pytest

from samjax.evaluation.edges_match import correspond_pixels, tolerance_pixels
from samjax.evaluation.edges_metrics import dataset_scores, image_counts, thresholds

H, W = 200, 300
T = 9


def vertical_lines(xs, y0=20, y1=180):
  m = np.zeros((H, W), bool)
  for x in xs:
    m[y0:y1, x] = True
  return m


def lines():
  """Straight segments, not touching: thinning leaves them as they are."""
  m = vertical_lines([40, 120])
  m[60, 150:280] = True
  m[150, 150:280] = True
  i = np.arange(30)
  m[20 + i, 200 + i] = True  # a diagonal
  return m


def scores(edges, boundaries, **kw):
  return dataset_scores([image_counts(edges, boundaries, T, **kw)], T)


def test_thresholds_are_the_benchmarks():
  t = thresholds(99)
  assert len(t) == 99 and t[0] == pytest.approx(0.01) and t[-1] == pytest.approx(0.99)
  assert tolerance_pixels((H, W), 0.0075) == pytest.approx(2.704, abs=1e-3)


def test_an_edge_map_against_itself_scores_one():
  gt = lines()
  s = scores(gt.astype(np.float32), [gt])
  assert s["ods"] == s["ois"] == s["r50"] == 1.0
  # Every threshold has R = P = 1, so precision is 1 over the recall range [1, 1]
  # (a single point): AP is the toolbox's 0 for a single recall value.
  assert s["ap"] == 0.0


def test_one_pixel_shift_is_matched_six_pixels_is_not():
  gt = vertical_lines([40, 120, 200])
  near = scores(vertical_lines([41, 121, 199]).astype(float), [gt])
  assert near["ods"] == near["ois"] == 1.0
  far = scores(vertical_lines([46, 126, 206]).astype(float), [gt])
  assert far["ods"] == far["ois"] == far["r50"] == 0.0


def test_matching_is_one_to_one_and_prefers_the_nearest():
  gt = vertical_lines([50])
  pred = vertical_lines([49, 52])  # both within 2.7 px of every gt pixel
  matched_pred, matched_gt = correspond_pixels(pred, gt, 0.0075)
  assert matched_gt.sum() == gt.sum() == matched_pred.sum()
  assert matched_pred[20:180, 49].all() and not matched_pred[:, 52].any()
  c = image_counts(pred.astype(float), [gt], T)
  assert set(c["cnt_p"]) == {int(gt.sum())} and set(c["sum_p"]) == {2 * int(gt.sum())}
  s = dataset_scores([c], T)
  assert s["ods_precision"] == 0.5 and s["ods_recall"] == 1.0
  assert s["ods"] == pytest.approx(2 / 3)


def test_matching_is_maximum_like_a_dense_assignment():
  from scipy.optimize import linear_sum_assignment
  rng = np.random.default_rng(0)
  for _ in range(5):
    pred, gt = rng.random((2, 30, 40)) < 0.08
    max_dist = 2.5 / np.hypot(30, 40)
    matched_pred, matched_gt = correspond_pixels(pred, gt, max_dist)
    # Reference: a dense assignment where pairs beyond the tolerance cost more
    # than all pairs within it together, so it maximises the matched count.
    p, g = np.argwhere(pred), np.argwhere(gt)
    d = np.hypot(*(p[:, None] - g[None]).transpose(2, 0, 1))
    cost = np.where(d <= 2.5, d, 1e6)
    rows, cols = linear_sum_assignment(cost)
    best = int((cost[rows, cols] < 1e6).sum())
    assert matched_pred.sum() == matched_gt.sum() == best
    assert not (matched_pred & ~pred).any() and not (matched_gt & ~gt).any()


def test_thick_edges_are_thinned_before_matching():
  gt = vertical_lines([50])
  thick = vertical_lines([49, 50, 51]).astype(float)
  thinned = scores(thick, [gt])
  # Thinned to the middle line (one pixel shorter at each end).
  assert thinned["ods_precision"] == 1.0 and thinned["ods_recall"] == 158 / 160
  unthinned = scores(thick, [gt], thin_edges=False)
  assert unthinned["ods_precision"] == pytest.approx(1 / 3)


def test_several_annotators_pool_recall_and_unite_precision():
  a, b = vertical_lines([40]), vertical_lines([150])
  n = int(a.sum())
  only_a = image_counts(a.astype(float), [a, a | b], T)
  # Recall: annotator 1 fully matched, annotator 2 half: (n + n) / (n + 2n).
  assert set(only_a["cnt_r"]) == {2 * n} and set(only_a["sum_r"]) == {3 * n}
  assert set(only_a["cnt_p"]) == {n} and set(only_a["sum_p"]) == {n}
  both = image_counts((a | b).astype(float), [a, b], T)
  # Each predicted line matches a different annotator: all count for precision.
  assert set(both["cnt_p"]) == {2 * n} and set(both["cnt_r"]) == {2 * n}


def test_threshold_sweep_counts_and_best_threshold():
  gt = vertical_lines([40])
  edges = 0.805 * gt + 0.305 * vertical_lines([150])
  c = image_counts(edges, [gt], 99)
  n = int(gt.sum())
  t = thresholds(99)
  expect_p = np.where(t <= 0.305, 2 * n, np.where(t <= 0.805, n, 0))
  np.testing.assert_array_equal(c["sum_p"], expect_p)
  s = dataset_scores([c], 99)
  assert s["ods"] == s["ois"] == 1.0 and 0.305 < s["ods_threshold"] <= 0.805


def test_ap_r50_ods_on_a_known_curve():
  # Three thresholds with (R, P) = (1, .5), (.5, 1), (0, 0).
  c = {"cnt_r": [10, 5, 0], "sum_r": [10] * 3, "cnt_p": [5, 5, 0], "sum_p": [10, 5, 0]}
  s = dataset_scores([c], 3)
  # P(r) = 2r on [0, .5], 1.5 - r on [.5, 1]; sampled at r = 0, .01, .., 1 and
  # summed / 100: (2 * 12.75) + (75 - 37.75) = 62.75.
  assert s["ap"] == pytest.approx(0.6275, abs=1e-12)
  assert s["r50"] == 1.0  # recall where precision is .5
  # Best F on the segment between the first two points is at its middle (.75),
  # sampled at 100 steps: within (1/99)^2 of it.
  assert s["ods"] == pytest.approx(0.75, abs=1e-4) and s["ods"] <= 0.75
  # A single image's OIS is its best threshold without interpolation: F = 2/3.
  assert s["ois"] == pytest.approx(2 / 3)


def test_ois_picks_each_images_best_threshold():
  a = {"cnt_r": [10, 0], "sum_r": [10, 10], "cnt_p": [10, 0], "sum_p": [10, 0]}
  b = {"cnt_r": [10, 10], "sum_r": [10, 10], "cnt_p": [10, 10], "sum_p": [100, 10]}
  s = dataset_scores([a, b], 2)
  assert s["ois"] == 1.0 and 2 / 3 <= s["ods"] < 1.0


def test_r50_is_zero_when_precision_never_reaches_half():
  c = {"cnt_r": [10, 5], "sum_r": [10, 10], "cnt_p": [4, 2], "sum_p": [10, 10]}
  assert dataset_scores([c], 2)["r50"] == 0.0


def test_an_empty_edge_map_scores_zero():
  s = scores(np.zeros((H, W)), [lines()])
  assert s["ods"] == s["ois"] == s["ap"] == s["r50"] == 0.0


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="differ in size"):
    image_counts(np.zeros((10, 10)), [np.zeros((10, 11), bool)])
  with pytest.raises(ValueError, match="max_dist"):
    correspond_pixels(np.zeros((4, 4), bool), np.zeros((4, 4), bool), 0.0)
  with pytest.raises(ValueError, match="thresholds"):
    dataset_scores([{"cnt_r": [1], "sum_r": [1], "cnt_p": [1], "sum_p": [1]}], 2)

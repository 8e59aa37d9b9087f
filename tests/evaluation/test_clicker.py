"""The point protocol's click placement against a brute-force reference.

The reference is written from the rule alone (RITM's clicker), sharing no
code with the harness: the depth of a pixel is its Euclidean distance to
the nearest pixel outside its error region, the ring of pixels just outside
the image counting as outside, found by trying every such pixel.
"""

import numpy as np
import pytest

from samjax.evaluation.clicker import Clicker, next_click


def _reference_depth(region: np.ndarray) -> np.ndarray:
  h, w = region.shape
  outside = [(y, x) for y in range(-1, h + 1) for x in range(-1, w + 1)
             if not (0 <= y < h and 0 <= x < w) or not region[y, x]]
  oy, ox = np.array(outside, float).T
  depth = np.zeros((h, w))
  for y, x in zip(*np.nonzero(region)):
    depth[y, x] = np.sqrt(((oy - y) ** 2 + (ox - x) ** 2).min())
  return depth


def _reference_click(gt, pred, clicked):
  """(x, y, positive) or None, by the rule; ``clicked``: set of (y, x)."""
  fn = _reference_depth(gt & ~pred)
  fp = _reference_depth(~gt & pred)
  for y, x in clicked:
    fn[y, x] = fp[y, x] = 0
  if fn.max() == 0 and fp.max() == 0:
    return None
  positive = fn.max() > fp.max()
  depth = fn if positive else fp
  best = depth.max()
  for y in range(depth.shape[0]):  # first deepest pixel, row by row
    for x in range(depth.shape[1]):
      if depth[y, x] == best:
        return x, y, positive


def _disc(h, w, cy, cx, r):
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _masks():
  """(name, gt) pairs: interior blobs, masks touching borders and corners."""
  rng = np.random.default_rng(0)
  h, w = 23, 31
  blob = np.zeros((h, w), bool)
  for _ in range(4):
    blob |= _disc(h, w, rng.integers(4, h - 4), rng.integers(4, w - 4), rng.integers(2, 6))
  left = np.zeros((h, w), bool)
  left[3:20, :9] = True                        # touches the left border
  corner = _disc(h, w, 0, w - 1, 9)            # a quarter disc in the top-right corner
  full = np.ones((h, w), bool)                 # the whole image
  ring = _disc(h, w, 11, 15, 9) & ~_disc(h, w, 11, 15, 4)
  bottom = np.zeros((h, w), bool)
  bottom[15:, 5:26] = True                     # touches the bottom border
  return [("blob", blob), ("left", left), ("corner", corner), ("full", full),
          ("ring", ring), ("bottom", bottom)]


@pytest.mark.parametrize("name,gt", _masks(), ids=[n for n, _ in _masks()])
def test_first_click_is_the_center_by_the_reference(name, gt):
  empty = np.zeros_like(gt)
  want = _reference_click(gt, empty, set())
  got = next_click(gt, empty)
  assert (got.x, got.y, got.positive) == want
  assert gt[got.y, got.x] and got.positive


def test_border_counts_as_boundary():
  # A band along the left, top and bottom borders: without the padding the
  # deepest pixel would sit on the image's left border (column 0); with it,
  # in the band's middle column, 4 pixels from the outside on three sides
  # (rows 3..5 tie; the first wins).
  gt = np.zeros((9, 20), bool)
  gt[:, :7] = True
  c = next_click(gt, np.zeros_like(gt))
  assert (c.x, c.y) == (3, 3)


def _session_preds(gt, rng, n):
  """Predictions with both false-negative and false-positive regions."""
  h, w = gt.shape
  ys, xs = np.nonzero(gt)
  for _ in range(n):
    pred = np.roll(gt, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    pred |= _disc(h, w, rng.integers(0, h), rng.integers(0, w), rng.integers(1, 6))
    j = rng.integers(len(ys))  # a hole somewhere in the object
    pred &= ~_disc(h, w, ys[j], xs[j], rng.integers(2, 8))
    yield pred


@pytest.mark.parametrize("name,gt", _masks(), ids=[n for n, _ in _masks()])
def test_follow_up_clicks_match_the_reference(name, gt):
  rng = np.random.default_rng(len(name))
  clicker = Clicker(gt)
  clicked = set()
  c = clicker.click()
  clicked.add((c.y, c.x))
  for pred in _session_preds(gt, rng, 6):
    want = _reference_click(gt, pred, clicked)
    got = clicker.click(pred)
    assert (None if got is None else (got.x, got.y, got.positive)) == want
    if got is not None:
      clicked.add((got.y, got.x))
      assert gt[got.y, got.x] == got.positive  # positive clicks on missed GT pixels
  coords, labels = clicker.prompt()
  assert coords.shape == (len(clicker.clicks), 2) and labels.tolist() == [
      c.label for c in clicker.clicks]


def test_the_sessions_above_click_on_both_error_kinds():
  kinds = set()
  for name, gt in _masks():
    clicker = Clicker(gt)
    clicker.click()
    for pred in _session_preds(gt, np.random.default_rng(len(name)), 6):
      c = clicker.click(pred)
      kinds.add(None if c is None else c.positive)
  assert {True, False} <= kinds


def test_sessions_place_both_positive_and_negative_clicks():
  gt = _disc(30, 30, 15, 15, 9)
  fn_big = gt & ~_disc(30, 30, 15, 10, 6)           # misses the left part: positive
  assert next_click(gt, fn_big).positive
  fp_big = gt | _disc(30, 30, 4, 25, 4)             # an extra blob: negative
  c = next_click(gt, fp_big)
  assert not c.positive and (c.x, c.y) == (25, 4)
  assert _reference_click(gt, fp_big, set()) == (25, 4, False)


def test_no_error_left_gives_no_click_and_clicked_pixels_are_not_reused():
  gt = _disc(15, 15, 7, 7, 4)
  assert next_click(gt, gt.copy()) is None
  one = np.zeros_like(gt)
  one[7, 7] = True
  clicker = Clicker(one)
  assert clicker.click() is not None
  # The only error pixel was clicked already: nothing left to click.
  assert clicker.click(np.zeros_like(one)) is None
  assert len(clicker.clicks) == 1

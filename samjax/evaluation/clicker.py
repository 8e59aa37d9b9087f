"""Simulated clicks of the point protocol (the RITM clicker's rule).

Every click, the first included, goes to the "center" of the largest error
region of the current prediction:

- false negatives ``FN = gt & ~pred`` and false positives ``FP = ~gt & pred``
  are each padded with a one-pixel zero border, so the image border counts as
  boundary (a region touching the border is not "infinitely deep" there);
- each gets its exact Euclidean distance transform (distance of a pixel to
  the nearest pixel outside the region), the border is cut off again, and
  pixels clicked before are set to 0 (never clicked twice);
- if the deepest FN pixel is strictly deeper than the deepest FP pixel the
  click is positive at that FN pixel, else negative at the deepest FP pixel;
  among equally deep pixels the first in row-major order wins.

Before any prediction ``pred`` is empty, so ``FN = gt`` and the first click
is the GT mask's center: the pixel farthest from its boundary.

One deviation from RITM: when no pixel is left to click (prediction equals
GT, up to already clicked pixels) RITM still emits a negative click at pixel
(0, 0); here ``next_click`` returns None and the protocol keeps the previous
prediction, so a perfect mask stays perfect.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Click:
  """One simulated click; ``x`` = column, ``y`` = row of the pixel."""
  x: int
  y: int
  positive: bool

  @property
  def label(self) -> int:
    """SAM's point label: 1 foreground, 0 background."""
    return int(self.positive)


def error_depth(region: np.ndarray) -> np.ndarray:
  """[H, W] bool -> [H, W] float64 distance of each region pixel to the
  nearest non-region pixel, the area outside the image counting as non-region."""
  padded = np.pad(region, 1, constant_values=False)
  return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(gt: np.ndarray, pred: np.ndarray,
               not_clicked: np.ndarray | None = None) -> Click | None:
  """The next click for ``gt`` [H, W] bool given the prediction ``pred``
  [H, W] bool; ``not_clicked`` [H, W] bool masks out earlier clicks.

  Returns None when no error pixel can be clicked."""
  fn = error_depth(gt & ~pred)
  fp = error_depth(~gt & pred)
  if not_clicked is not None:
    fn = fn * not_clicked
    fp = fp * not_clicked
  fn_max, fp_max = fn.max(), fp.max()
  if fn_max == 0 and fp_max == 0:
    return None
  positive = bool(fn_max > fp_max)
  depth = fn if positive else fp
  # argmax returns the first maximum in row-major (C) order.
  y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
  return Click(int(x), int(y), positive)


class Clicker:
  """The clicks of one GT mask over an interactive session."""

  def __init__(self, gt: np.ndarray):
    self.gt = np.asarray(gt, bool)
    self.clicks: list[Click] = []
    self._not_clicked = np.ones_like(self.gt)

  def click(self, pred: np.ndarray | None = None) -> Click | None:
    """Adds (and returns) the click for prediction ``pred`` (None: no
    prediction yet); returns None, adding nothing, when nothing is left."""
    pred = np.zeros_like(self.gt) if pred is None else np.asarray(pred, bool)
    c = next_click(self.gt, pred, self._not_clicked)
    if c is not None:
      self.clicks.append(c)
      self._not_clicked[c.y, c.x] = False
    return c

  def prompt(self) -> tuple[np.ndarray, np.ndarray]:
    """All clicks so far as SAM's (point_coords [N, 2] (x, y), point_labels [N])."""
    coords = np.array([[c.x, c.y] for c in self.clicks], np.float32).reshape(-1, 2)
    labels = np.array([c.label for c in self.clicks], np.int32)
    return coords, labels

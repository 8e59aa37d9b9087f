"""Inputs the official predictor and generator take and samjax used to refuse:
points and boxes outside the image, any positive ``points_per_batch``, the
official defaults, and the official record types (float ``crop_box``)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import skimage.data
import torch

from samjax import SamAutomaticMaskGenerator, SamPredictor
from samjax.loading import LoadedSam

LOGIT_TOL = 1e-3


@pytest.fixture(scope="module")
def pair():
  from tests.conftest import official_pair
  sam, model, params = official_pair("vit_tiny")
  return sam, LoadedSam(model, params)


def test_points_and_boxes_outside_the_image_match_official(pair):
  """The official transforms such prompts like any other (the positional
  encoding extrapolates); samjax gives the same logits."""
  from segment_anything import SamPredictor as Official
  sam, loaded = pair
  image = skimage.data.chelsea()  # 300x451
  h, w = image.shape[:2]
  official, ours = Official(sam), SamPredictor(loaded)
  official.set_image(image)
  ours.set_image(image)
  pts = np.array([[-40.0, 0.5 * h], [w + 25.0, -10.0], [0.5 * w, 2.0 * h]])
  labels = np.array([1, 0, 1])
  box = np.array([-30.0, -20.0, w + 40.0, 0.8 * h])
  cases = [dict(point_coords=pts, point_labels=labels), dict(box=box),
           dict(point_coords=pts[:1], point_labels=labels[:1], box=box[None, :])]
  for kwargs in cases:
    with torch.no_grad():
      ref = official.predict(**kwargs)
    got = ours.predict(**kwargs)
    assert got[0].shape == ref[0].shape
    assert np.abs(got[2] - ref[2]).max() <= LOGIT_TOL
    assert np.abs(got[1] - ref[1]).max() <= LOGIT_TOL
    assert (got[0] == ref[0]).mean() >= 0.999


def test_generator_defaults_are_official(pair):
  from segment_anything import SamAutomaticMaskGenerator as Official
  ours = inspect.signature(SamAutomaticMaskGenerator).parameters
  ref = inspect.signature(Official).parameters
  for name, p in ref.items():
    if name != "model":
      assert ours[name].default == p.default, name
  assert ours["points_per_batch"].default == 64


@pytest.mark.parametrize("points_per_batch", [1, 3, 10, 64])
def test_any_points_per_batch_gives_the_same_records(pair, points_per_batch):
  """Batches that are not whole prompt chunks are padded, not refused; the
  records do not depend on the batch size (25 points: a partial last batch;
  3 and 10 start batches at every slot of a 4-prompt chunk)."""
  _, loaded = pair
  image = skimage.data.chelsea()
  kw = dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0,
            box_nms_thresh=1.0)
  ref = SamAutomaticMaskGenerator(loaded, points_per_batch=4, **kw).generate(image)
  got = SamAutomaticMaskGenerator(loaded, points_per_batch=points_per_batch,
                                  **kw).generate(image)
  assert len(got) == len(ref) == 75
  for a, b in zip(got, ref):
    np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
    for k in ("area", "bbox", "point_coords", "crop_box"):
      assert a[k] == b[k], k
    # Another batch size is another XLA program: float rounding may differ.
    for k in ("predicted_iou", "stability_score"):
      assert abs(a[k] - b[k]) <= 1e-5, k


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_record_types_match_official(pair, crop_n_layers):
  """Value and Python type of every non-mask field, as the official gives
  them: with crops, one crop without masks makes every crop_box float
  (torch promotes the empty crop's float tensor); without crops, ints."""
  from segment_anything import SamAutomaticMaskGenerator as Official
  sam, loaded = pair
  image = skimage.data.chelsea()
  kw = dict(points_per_side=2, crop_n_layers=crop_n_layers, pred_iou_thresh=0.0,
            stability_score_thresh=0.0)
  ours = SamAutomaticMaskGenerator(loaded, **kw).generate(image)
  with torch.no_grad():
    ref = Official(sam, **kw).generate(image)
  assert len(ours) == len(ref) >= 1
  types = lambda r: {k: [type(x) for x in np.ravel(r[k])] if isinstance(r[k], list)
                     else type(r[k]) for k in r if k != "segmentation"}
  for a, b in zip(ours, ref):
    assert types(a) == types(b)
    assert a["crop_box"] == b["crop_box"] and a["bbox"] == b["bbox"]
  want = float if crop_n_layers else int
  assert all(type(v) is want for r in ours for v in r["crop_box"])

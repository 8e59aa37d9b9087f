"""SamPredictor vs the official SamPredictor on the same weights and photographs."""

import numpy as np
import pytest
import skimage.data
import torch

from samjax import SamPredictor
from samjax.loading import LoadedSam

LOGIT_TOL = 1e-3
PIXEL_AGREEMENT = 0.999


def _photos():
  astro = skimage.data.astronaut()          # 512x512
  coffee = skimage.data.coffee()            # 400x600 landscape
  chelsea = skimage.data.chelsea()          # 300x451, odd sizes
  return {
      "landscape": coffee,
      "portrait": np.ascontiguousarray(astro[:500, 100:417]),   # 500x317
      "odd": chelsea,
      "tiny": np.ascontiguousarray(astro[200:237, 250:273]),    # 37x23
  }


PHOTOS = _photos()


@pytest.fixture(scope="module")
def predictors(request):
  from segment_anything import SamPredictor as OfficialPredictor

  from tests.conftest import official_pair
  sam, model, params = official_pair("vit_tiny")
  return OfficialPredictor(sam), SamPredictor(LoadedSam(model, params))


def _compare(ours, ref, return_logits=False):
  masks, iou, low = ours
  rmasks, riou, rlow = ref
  assert masks.shape == rmasks.shape and low.shape == rlow.shape
  assert np.abs(low - rlow).max() <= LOGIT_TOL
  assert np.abs(iou - riou).max() <= LOGIT_TOL
  if return_logits:
    assert np.abs(masks - rmasks).max() <= LOGIT_TOL
  else:
    assert masks.dtype == bool
    assert (masks == rmasks).mean() >= PIXEL_AGREEMENT


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_predict_matches_official(predictors, name):
  official, ours = predictors
  image = PHOTOS[name]
  h, w = image.shape[:2]
  official.set_image(image)
  ours.set_image(image)
  np.testing.assert_allclose(ours.get_image_embedding(),
                             official.get_image_embedding().numpy(), atol=LOGIT_TOL)
  rng = np.random.default_rng(h * w)
  pts = np.stack([rng.uniform(0, w, 5), rng.uniform(0, h, 5)], -1)
  labels = np.array([1, 0, 1, 1, 0])
  box = np.array([0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h])
  cases = [
      dict(point_coords=pts[:1], point_labels=labels[:1]),
      dict(point_coords=pts, point_labels=labels),
      dict(box=box),
      dict(point_coords=pts[:2], point_labels=labels[:2], box=box),
  ]
  for kwargs in cases:
    for multimask in (True, False):
      ref = official.predict(**kwargs, multimask_output=multimask)
      got = ours.predict(**kwargs, multimask_output=multimask)
      _compare(got, ref)
  # Mask input: feed back the best previous low-res logits (interactive loop).
  _, scores, low = official.predict(point_coords=pts[:1], point_labels=labels[:1])
  prev = low[np.argmax(scores)][None]
  kwargs = dict(point_coords=pts[:3], point_labels=labels[:3], mask_input=prev)
  _compare(ours.predict(**kwargs, multimask_output=False),
           official.predict(**kwargs, multimask_output=False))
  _compare(ours.predict(**kwargs, return_logits=True),
           official.predict(**kwargs, return_logits=True), return_logits=True)


def test_batched_form_matches_official_predict_torch(predictors):
  official, ours = predictors
  image = PHOTOS["landscape"]
  h, w = image.shape[:2]
  official.set_image(image)
  ours.set_image(image)
  rng = np.random.default_rng(0)
  x0 = rng.uniform(0, w / 2, 6)
  y0 = rng.uniform(0, h / 2, 6)
  boxes = np.stack([x0, y0, x0 + rng.uniform(5, w / 2, 6), y0 + rng.uniform(5, h / 2, 6)], -1)
  pts = np.stack([rng.uniform(0, w, (6, 2)), rng.uniform(0, h, (6, 2))], -1)
  labels = rng.integers(0, 2, (6, 2))
  for multimask in (True, False):
    with torch.no_grad():
      t_boxes = official.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float),
                                                     image.shape[:2])
      t_pts = official.transform.apply_coords_torch(torch.as_tensor(pts, dtype=torch.float),
                                                    image.shape[:2])
      ref = official.predict_torch(t_pts, torch.as_tensor(labels), t_boxes,
                                   multimask_output=multimask)
    ref = tuple(r.numpy() for r in ref)
    got = ours.predict_batch(pts, labels, boxes, multimask_output=multimask)
    assert got[0].shape == (6, 3 if multimask else 1, h, w)
    _compare(got, ref)


def test_not_a_point_labels_and_1x4_box_match_official(predictors):
  """Label -1 (official "not a point") and the notebook's ``box[None, :]``,
  alone and together, give the official results."""
  official, ours = predictors
  image = PHOTOS["odd"]
  h, w = image.shape[:2]
  official.set_image(image)
  ours.set_image(image)
  pts = np.array([[0.3 * w, 0.4 * h], [0.0, 0.0], [0.6 * w, 0.5 * h]])
  labels = np.array([1, -1, 0])
  box = np.array([[0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h]])
  cases = [
      dict(point_coords=pts, point_labels=labels),
      dict(box=box),
      dict(point_coords=pts, point_labels=labels, box=box),
      dict(point_coords=pts[1:2], point_labels=labels[1:2], box=box),
  ]
  for kwargs in cases:
    for multimask in (True, False):
      _compare(ours.predict(**kwargs, multimask_output=multimask),
               official.predict(**kwargs, multimask_output=multimask))


@pytest.mark.slow
def test_vit_b_predictor_on_photograph(vit_b_pair):
  from segment_anything import SamPredictor as OfficialPredictor
  sam, model, params = vit_b_pair
  official, ours = OfficialPredictor(sam), SamPredictor(LoadedSam(model, params))
  image = skimage.data.coffee()
  official.set_image(image)
  ours.set_image(image)
  for kwargs in (dict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1])),
                 dict(box=np.array([100.0, 50.0, 450.0, 380.0]))):
    _compare(ours.predict(**kwargs), official.predict(**kwargs))

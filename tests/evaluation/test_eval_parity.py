"""End to end: samjax's predictor and the official one, same weights, same
protocol code, same numbers; and an interrupted run resumes to the same numbers.

The samjax predictor gets one point bucket and one prompt bucket, so each
protocol compiles one decoder program per prompt kind (the set's images
share one size); the numbers do not depend on buckets.
"""

import os

import pytest

from data_pipelines.atomic_io import TEMP_MARKER
from samjax.evaluation import boxes, points
from samjax.evaluation.per_image_log import (
  PerImageLogError,
  image_file_name,
  log_path_for,
  read_records,
)

# One worker builds the module's runs (under pytest-xdist a module-scoped
# fixture is built by every worker that gets one of its tests).
pytestmark = [pytest.mark.usefixtures("torch_single_thread"),
              pytest.mark.xdist_group("eval_parity")]

MAX_POINTS = 3
TOL = 1e-3


class _Killed(Exception):
  """Stands for a kill: raised by a predictor after some images."""


class _DiesAfter:
  """A predictor that is 'killed' when asked for its (k+1)-th image."""

  def __init__(self, predictor, k):
    self._p, self._left = predictor, k
    self.images = 0

  def set_image(self, image):
    if self._left == 0:
      raise _Killed
    self._left -= 1
    self.images += 1
    self._p.set_image(image)

  def predict(self, **kwargs):
    return self._p.predict(**kwargs)


@pytest.fixture(scope="module")
def predictors(tiny_pair, torch_single_thread):
  from segment_anything import SamPredictor as OfficialPredictor

  from samjax import SamPredictor
  from samjax.loading import LoadedSam
  sam, model, params = tiny_pair
  ours = SamPredictor(LoadedSam(model, params), point_buckets=(4,), prompt_buckets=(8,))
  return {"samjax": ours, "official": OfficialPredictor(sam)}


@pytest.fixture(scope="module")
def runs(predictors, eval_set, tmp_path_factory):
  """{(protocol, predictor name): results document, ("points_out", name): its path}."""
  from samjax.evaluation.coco_gt import load_dataset
  out = tmp_path_factory.mktemp("parity")
  docs = {}
  for name, pred in predictors.items():
    ds = load_dataset(eval_set["annotations"], eval_set["images"])
    docs["points_out", name] = str(out / f"points_{name}.json")
    docs["points", name] = points.run(pred, ds, docs["points_out", name],
                                      model={"checkpoint": name}, max_points=MAX_POINTS,
                                      progress=False)
    docs["boxes", name] = boxes.run(pred, ds, str(out / f"boxes_{name}.json"),
                                    model={"checkpoint": name},
                                    detections=eval_set["detections"], progress=False)
  return docs


def test_points_numbers_match_the_official_predictor(runs):
  ours, ref = runs["points", "samjax"], runs["points", "official"]
  assert ours["num_masks"] == ref["num_masks"] == 11
  assert len(ours["miou_curve"]) == MAX_POINTS
  for key in ("miou_1pt", "miou_1pt_oracle"):
    assert ours[key] == pytest.approx(ref[key], abs=TOL)
  assert ours["miou_curve"] == pytest.approx(ref["miou_curve"], abs=TOL)
  assert ours["miou_1pt"] == ours["miou_curve"][0] <= ours["miou_1pt_oracle"]


def _logged(out: str) -> list[dict]:
  """The per-image records, in image id order (the order the run made them)."""
  return sorted(read_records(log_path_for(out)), key=lambda r: int(r["image"]))


def test_points_follow_up_clicks_are_the_same(runs):
  """The same clicks on both sides: the sessions did not diverge."""
  clicks = {name: [m["clicks"] for r in _logged(runs["points_out", name]) for m in r["masks"]]
            for name in ("samjax", "official")}
  assert clicks["samjax"] == clicks["official"]
  assert {len(c) for c in clicks["samjax"]} == {MAX_POINTS}


def test_boxes_numbers_match_the_official_predictor(runs):
  ours, ref = runs["boxes", "samjax"], runs["boxes", "official"]
  assert ours["num_masks"] == ref["num_masks"] == 14
  for key in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"):
    assert ours[key] == pytest.approx(ref[key], abs=TOL)


def test_a_killed_run_resumes_to_the_same_numbers(predictors, runs, eval_set, tmp_path):
  from samjax.evaluation.coco_gt import load_dataset
  ds = load_dataset(eval_set["annotations"], eval_set["images"])
  out = str(tmp_path / "points.json")
  dying = _DiesAfter(predictors["official"], 1)
  with pytest.raises(_Killed):
    points.run(dying, ds, out, model={"checkpoint": "official"}, max_points=MAX_POINTS,
               progress=False)
  # What a kill in the middle of image 11's write leaves locally: its temp
  # file, never the file itself (the rerun removes it and redoes image 11).
  temp = os.path.join(log_path_for(out), image_file_name(11) + TEMP_MARKER + "0badf00d")
  with open(temp, "wb") as f:
    f.write(b'{"image": "11", "masks": [{"io')
  again = _DiesAfter(predictors["official"], 99)
  doc = points.run(again, ds, out, model={"checkpoint": "official"}, max_points=MAX_POINTS,
                   progress=False)
  assert again.images == 2  # the finished image was not redone
  assert not os.path.exists(temp)
  ref = runs["points", "official"]
  for key in ("miou_1pt", "miou_1pt_oracle", "miou_curve", "num_masks", "num_images"):
    assert doc[key] == ref[key]
  with pytest.raises(PerImageLogError, match="other settings"):
    points.run(predictors["official"], ds, out, model={"checkpoint": "official"},
               max_points=MAX_POINTS + 1, progress=False)

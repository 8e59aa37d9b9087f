"""Protocol ``proposals``: AR@1000 is COCOeval's, GT masks as proposals recall all."""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from samjax.evaluation import proposals
from samjax.evaluation.coco_gt import load_dataset
from samjax.evaluation.per_image_log import log_path_for, read_records
from tests.evaluation.fakes import GtGenerator

pytestmark = pytest.mark.usefixtures("torch_single_thread")

AR_KEYS = ("ar1000", "ar1000_small", "ar1000_medium", "ar1000_large", "ar1000_frequent",
           "ar1000_common", "ar1000_rare")


def _logged_proposals(out: str) -> list[dict]:
  """The proposals the harness scored, read back from its per-image log."""
  records = read_records(log_path_for(out))
  return [{"image_id": r["image_id"], "category_id": 1, **p}
          for r in records for p in r["proposals"]]


def cocoeval_ar(annotations: str, props: list, image_ids, keep_cats=None) -> np.ndarray:
  """COCOeval run by hand: category-agnostic, up to 1000 detections per image."""
  gt = COCO(annotations)
  if keep_cats is not None:  # GT of some categories only (a frequency bucket)
    gt.dataset["annotations"] = [a for a in gt.dataset["annotations"]
                                 if a["category_id"] in keep_cats]
    gt.createIndex()
  ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(props))), iouType="segm")
  ev.params.imgIds = list(image_ids)
  ev.params.useCats = 0
  ev.params.maxDets = [1, 100, 1000]
  ev.evaluate()
  ev.accumulate()
  ev.summarize()
  return ev.stats


def test_gt_masks_as_proposals_recall_everything(dataset, tmp_path):
  doc = proposals.run(GtGenerator(dataset), dataset, str(tmp_path / "r.json"),
                      model={"checkpoint": "gt"}, generator_settings={}, progress=False)
  assert [doc[k] for k in AR_KEYS] == pytest.approx([1.0] * len(AR_KEYS), abs=1e-9)


def test_harness_ar_is_cocoeval_on_the_same_proposals(dataset, eval_set, tmp_path):
  out = str(tmp_path / "r.json")
  doc = proposals.run(GtGenerator(dataset, noise=True), dataset, out,
                      model={"checkpoint": "noisy"}, generator_settings={}, progress=False)
  props = _logged_proposals(out)
  assert len(props) == doc["num_masks"]
  stats = cocoeval_ar(eval_set["annotations"], props, dataset.image_ids())
  assert 0.2 < doc["ar1000"] < 0.95
  got = [doc[k] for k in ("ar1000", "ar1000_small", "ar1000_medium", "ar1000_large")]
  assert got == pytest.approx([stats[8], stats[9], stats[10], stats[11]], abs=1e-12)
  for name, code in (("frequent", "f"), ("common", "c"), ("rare", "r")):
    cats = {c["id"] for c in dataset.coco.dataset["categories"] if c["frequency"] == code}
    ref = cocoeval_ar(eval_set["annotations"], props, dataset.image_ids(), cats)
    assert doc[f"ar1000_{name}"] == pytest.approx(ref[8], abs=1e-12)


def test_proposals_are_ranked_and_cut(dataset):
  image = dataset.load_image(dataset.image_ids()[0])
  gen = GtGenerator(dataset, noise=True)
  records = gen.generate(image)
  top = proposals.evaluate_image(gen, image, max_proposals=3)
  assert [p["score"] for p in top] == sorted(r["predicted_iou"] for r in records)[::-1][:3]
  top = proposals.evaluate_image(gen, image, max_proposals=2, rank_by="iou_x_stability")
  want = sorted((r["predicted_iou"] * r["stability_score"] for r in records), reverse=True)
  assert [p["score"] for p in top] == want[:2]


def test_without_frequencies_there_are_no_frequency_buckets(eval_set, tmp_path):
  sa1b = load_dataset(eval_set["sa1b"])
  doc = proposals.run(GtGenerator(sa1b), sa1b, str(tmp_path / "r.json"),
                      model={"checkpoint": "gt"}, generator_settings={}, progress=False)
  assert doc["ar1000"] == pytest.approx(1.0, abs=1e-9)
  assert "ar1000_rare" not in doc and doc["num_images"] == 2


def test_official_generator_proposals_are_scored_like_cocoeval(tiny_pair, dataset, eval_set,
                                                               tmp_path):
  from segment_anything import SamAutomaticMaskGenerator
  gen = SamAutomaticMaskGenerator(tiny_pair[0], points_per_side=4, pred_iou_thresh=0.0,
                                  stability_score_thresh=0.0)  # binary masks out
  out = str(tmp_path / "r.json")
  doc = proposals.run(gen, dataset, out, model={"checkpoint": "official"},
                      generator_settings={"points_per_side": 4}, progress=False)
  props = _logged_proposals(out)
  assert doc["num_masks"] == len(props) > 0
  stats = cocoeval_ar(eval_set["annotations"], props, dataset.image_ids())
  assert doc["ar1000"] == pytest.approx(stats[8], abs=1e-12)

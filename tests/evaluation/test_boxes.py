"""Protocol ``boxes``: mask AP is COCOeval's, perfect masks score 1."""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from samjax.evaluation import boxes
from samjax.evaluation.coco_metrics import segm_ap
from samjax.inference.mask_io import encode_rle
from tests.evaluation.fakes import OraclePredictor

AP_KEYS = ("ap", "ap_small", "ap_medium", "ap_large")


def cocoeval_segm(annotations: str, results: list, image_ids) -> np.ndarray:
  """COCOeval's stats straight from the files, as a user would run it."""
  gt = COCO(annotations)
  ev = COCOeval(gt, gt.loadRes(results), iouType="segm")
  ev.params.imgIds = list(image_ids)
  ev.evaluate()
  ev.accumulate()
  ev.summarize()
  return ev.stats


def test_gt_masks_give_ap_one(dataset):
  results = [{"image_id": i, "category_id": a["category_id"], "score": 1.0,
              "segmentation": encode_rle(dataset.mask(a))}
             for i in dataset.image_ids() for a in dataset.instances(i)]
  ap = segm_ap(dataset.coco, results, dataset.image_ids())
  # Every size bucket has GT; COCOeval's averaging may leave 1 - 2e-16.
  assert [ap[k] for k in AP_KEYS] == pytest.approx([1.0] * 4, abs=1e-9)


def test_perfect_masks_through_the_harness_give_ap_one(dataset, tmp_path):
  pred = OraclePredictor(dataset)
  doc = boxes.run(pred, dataset, str(tmp_path / "r.json"), model={"checkpoint": "oracle"},
                  progress=False)
  assert [doc[k] for k in AP_KEYS] == pytest.approx([1.0] * 4, abs=1e-9)
  with open(doc["masks_file"]) as f:
    masks = json.load(f)
  assert len(masks) == doc["num_masks"] == sum(len(dataset.instances(i))
                                               for i in dataset.image_ids())


def test_harness_numbers_are_cocoeval_of_its_masks_file(dataset, eval_set, tmp_path):
  pred = OraclePredictor(dataset, damage=True)
  doc = boxes.run(pred, dataset, str(tmp_path / "r.json"), model={"checkpoint": "oracle"},
                  detections=eval_set["detections"], progress=False)
  with open(eval_set["detections"]) as f:
    assert doc["num_masks"] == len(json.load(f))
  # Detections reaching past the image were clipped before prompting.
  assert all(b.min() >= 0 and b[2] <= hw[1] and b[3] <= hw[0] for b, hw in pred.boxes_seen)
  assert sum(b[2] == hw[1] and b[3] == hw[0] for b, hw in pred.boxes_seen) == 3
  with open(doc["masks_file"]) as f:
    results = json.load(f)
  stats = cocoeval_segm(eval_set["annotations"], results, dataset.image_ids())
  assert 0.2 < doc["ap"] < 0.95  # neither trivial nor perfect
  assert [doc[k] for k in AP_KEYS] == pytest.approx([stats[0], stats[3], stats[4], stats[5]],
                                                    abs=1e-12)


def test_detections_file_errors(dataset, tmp_path):
  with pytest.raises(FileNotFoundError, match="--detections"):
    boxes.load_detections(str(tmp_path / "nope.json"), dataset)
  other = tmp_path / "other.json"
  other.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 4, 4],
                                "score": 1.0}]))
  with pytest.raises(ValueError, match="another dataset"):
    boxes.load_detections(str(other), dataset)
  other.write_text(json.dumps([{"image_id": 10, "bbox": [0, 0, 4, 4]}]))
  with pytest.raises(ValueError, match="lacks"):
    boxes.load_detections(str(other), dataset)

"""Mask AP and AR with pycocotools' COCOeval (iouType 'segm'), nothing re-implemented.

``segm_ap``: instance segmentation, COCOeval's default parameters (10 IoU
thresholds .50:.05:.95, maxDets 1/10/100, COCO area ranges), per category.

``proposal_ar``: category-agnostic recall of object proposals
(``useCats = 0``: any proposal may match any GT mask), maxDets 1/100/1000:
``ar1000`` is COCOeval's AR at 1000 detections per image, averaged over the
10 IoU thresholds, and per area range. With LVIS-style categories (a
``frequency`` field, 'f'/'c'/'r') also per frequency bucket: the same
evaluation against only the GT masks of that bucket's categories.

Crowd GT (``iscrowd`` 1) is COCOeval's "ignore" region. Values are
COCOeval's ``stats`` entries: -1 where the bucket holds no GT mask.
"""

from __future__ import annotations

import copy

import numpy as np

from samjax.evaluation.coco_gt import coco_from_dict, quiet

FREQUENCY_NAMES = {"f": "frequent", "c": "common", "r": "rare"}


def _run_cocoeval(coco_gt, detections: list[dict], image_ids: list, *,
                  use_cats: bool, max_dets: list[int]) -> np.ndarray:
  """COCOeval 'segm' -> its 12 ``stats``; -1 everywhere when there is no detection."""
  from pycocotools.cocoeval import COCOeval
  if not detections:
    # loadRes cannot take an empty list; with GT present every AP/AR is 0.
    has_gt = bool(coco_gt.getAnnIds(imgIds=image_ids))
    return np.full(12, 0.0 if has_gt else -1.0)
  with quiet():
    # loadRes and COCOeval rewrite the dicts they get (area, id, masks).
    coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    ev = COCOeval(coco_gt, coco_dt, iouType="segm")
    ev.params.imgIds = list(image_ids)
    ev.params.useCats = int(use_cats)
    ev.params.maxDets = list(max_dets)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  return np.asarray(ev.stats, np.float64)


def segm_ap(coco_gt, detections: list[dict], image_ids: list) -> dict:
  """Mask AP of ``detections`` (COCO results: image_id, category_id, score,
  segmentation RLE) on ``image_ids``."""
  s = _run_cocoeval(coco_gt, detections, image_ids, use_cats=True, max_dets=[1, 10, 100])
  keys = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
  return {k: float(v) for k, v in zip(keys, s[:6])}


def proposal_ar(coco_gt, proposals: list[dict], image_ids: list,
                max_dets: int = 1000) -> dict:
  """Category-agnostic mask AR of ``proposals`` (image_id, score,
  segmentation RLE; category_id optional) on ``image_ids``; keys
  ``ar1000``, ``ar1000_{small,medium,large}``, ``ar100``, ``ar1`` and, for
  LVIS-style categories, ``ar1000_{frequent,common,rare}``."""
  if max_dets != 1000:
    raise ValueError("the proposal protocol reports AR@1000 (max_dets=1000)")
  cats = coco_gt.getCatIds()
  some_cat = cats[0] if cats else 1
  dets = [{**p, "category_id": p.get("category_id", some_cat)} for p in proposals]
  s = _run_cocoeval(coco_gt, dets, image_ids, use_cats=False, max_dets=[1, 100, 1000])
  out = {"ar1000": s[8], "ar1000_small": s[9], "ar1000_medium": s[10],
         "ar1000_large": s[11], "ar100": s[7], "ar1": s[6]}
  freq = {c["id"]: c["frequency"] for c in coco_gt.dataset.get("categories", [])
          if "frequency" in c}
  for code, name in FREQUENCY_NAMES.items():
    if not freq:
      break
    keep = {cid for cid, f in freq.items() if f == code}
    subset = dict(coco_gt.dataset)
    subset["annotations"] = [a for a in coco_gt.dataset["annotations"]
                             if a["category_id"] in keep]
    sub_gt = coco_from_dict(copy.deepcopy(subset))
    out[f"ar1000_{name}"] = _run_cocoeval(sub_gt, dets, image_ids, use_cats=False,
                                          max_dets=[1, 100, 1000])[8]
  return {k: float(v) for k, v in out.items()}

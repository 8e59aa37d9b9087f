"""Protocol ``proposals``: automatic masks as object proposals, scored by mask AR@1000.

The automatic mask generator (any object with the official
``SamAutomaticMaskGenerator.generate(image) -> records`` API) labels each
image; its masks are ranked by a score and the top ``max_proposals`` kept:

- ``rank_by='predicted_iou'`` (default): the model's predicted IoU, the
  score the generator itself uses for its box NMS;
- ``rank_by='iou_x_stability'``: predicted IoU x stability score.

Recall is COCOeval's, category-agnostic (``coco_metrics.proposal_ar``):
``ar1000`` plus per area range and, for LVIS-style annotations, per
category frequency.
"""

from __future__ import annotations

import numpy as np

from data_pipelines import storage
from samjax.evaluation.coco_metrics import proposal_ar
from samjax.evaluation.runner import run_protocol
from samjax.inference.mask_io import encode_rle

PROTOCOL = "proposals"
RANKINGS = ("predicted_iou", "iou_x_stability")


def score(record: dict, rank_by: str) -> float:
  if rank_by == "predicted_iou":
    return float(record["predicted_iou"])
  if rank_by == "iou_x_stability":
    return float(record["predicted_iou"]) * float(record["stability_score"])
  raise ValueError(f"rank_by must be one of {RANKINGS}, got {rank_by!r}")


def _rle(segmentation) -> dict:
  """A generator record's mask (binary [H, W] or COCO RLE) -> COCO RLE, str counts."""
  if isinstance(segmentation, np.ndarray):
    return encode_rle(segmentation)
  counts = segmentation["counts"]
  if isinstance(counts, list):  # 'uncompressed_rle' output mode
    from pycocotools import mask as mask_utils
    h, w = segmentation["size"]
    return encode_rle(mask_utils.decode(mask_utils.frPyObjects(segmentation, h, w)))
  return {"size": list(segmentation["size"]),
          "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def evaluate_image(generator, image: np.ndarray, max_proposals: int = 1000,
                   rank_by: str = "predicted_iou") -> list[dict]:
  """The top ``max_proposals`` masks of ``image``: ``score`` and ``segmentation``
  (COCO RLE), best first (stable order among equal scores)."""
  records = generator.generate(image)
  scores = np.array([score(r, rank_by) for r in records], np.float64)
  order = np.argsort(-scores, kind="stable")[:max_proposals]
  return [{"score": float(scores[i]), "segmentation": _rle(records[i]["segmentation"])}
          for i in order]


def results_list(records: list[dict]) -> list[dict]:
  """Per-image log records -> one COCO-style proposals list."""
  return [{"image_id": r["image_id"], **p} for r in records for p in r["proposals"]]


def run(generator, dataset, out: str, *, model: dict, generator_settings: dict,
        max_proposals: int = 1000, rank_by: str = "predicted_iou",
        limit: int | None = None, progress: bool = True) -> dict:
  """The protocol over ``dataset``; writes and returns the results document.

  ``generator_settings``: the generator's arguments, recorded with the
  results (and checked on resume).
  """
  if rank_by not in RANKINGS:
    raise ValueError(f"--rank-by must be one of {RANKINGS}, got {rank_by!r}")
  if not 1 <= max_proposals <= 1000:
    raise ValueError(f"--max-proposals must be in 1..1000, got {max_proposals}")
  image_ids = dataset.image_ids(limit)
  settings = {"annotations": storage.resolve(dataset.source),
              "images": storage.resolve(dataset.images_dir),
              "max_proposals": max_proposals, "rank_by": rank_by,
              "generator": generator_settings}

  def evaluate(image_id):
    props = evaluate_image(generator, dataset.load_image(image_id), max_proposals, rank_by)
    return {"image_id": image_id, "proposals": props}

  return run_protocol(
      protocol=PROTOCOL, out=out, settings=settings, model=model, image_ids=image_ids,
      evaluate_image=evaluate,
      summarize=lambda recs: proposal_ar(dataset.coco, results_list(recs), image_ids),
      count_masks=lambda r: len(r["proposals"]), progress=progress)

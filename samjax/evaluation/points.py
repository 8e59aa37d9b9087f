"""Protocol ``points``: single point -> valid mask, then interactive follow-ups.

For every (non-crowd, non-empty) GT mask of an image, with the image
embedded once (``set_image``):

- click 1 at the mask's center (``clicker``), a multimask prediction (3
  masks). Reported: the mask the model itself ranks first (highest predicted
  IoU) -> ``miou_1pt``; the best of the 3 by IoU with the GT (oracle) ->
  ``miou_1pt_oracle``.
- clicks 2..max_points at the center of the largest error region of the
  previous prediction (``clicker``). Each prediction gets *all* clicks so
  far plus, as ``mask_input``, the low-res logits of the previous
  prediction (at click 1: of the model's top-ranked mask), with single-mask
  output: the refinement loop of the official predictor notebook.
  ``use_mask_input=False`` drops the logits (clicks only).
- ``miou_curve[k-1]`` is the mIoU after k clicks (k = 1 uses the top-ranked
  mask). A mask whose prediction leaves no error pixel to click keeps its
  prediction (and IoU) for the remaining clicks.

A click is passed as its pixel's integer index, (x, y) = (column, row), as
RITM's clicker gives it. mIoU is the mean over all masks of the dataset
(not per image). Masks are the predictor's thresholded masks (logits > 0)
at the image's resolution.
All masks of an image are prompted together at each click (``prompting``).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import storage
from samjax.evaluation.clicker import Clicker
from samjax.evaluation.prompting import predict_prompts
from samjax.evaluation.runner import run_protocol

PROTOCOL = "points"


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two [H, W] bool masks (1.0 when both are empty)."""
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else 1.0


def evaluate_image(predictor, image: np.ndarray, gts: list[np.ndarray], max_points: int,
                   use_mask_input: bool = True, chunk: int = 32) -> list[dict]:
  """The protocol on one image's GT masks.

  Args:
    predictor: a predictor-like object (official ``SamPredictor`` API).
    image: [H, W, 3] uint8 RGB.
    gts: [H, W] bool masks, none empty.
    max_points: clicks per mask (>= 1).
    chunk: GT masks prompted together (bounds host memory: each keeps
      full-size masks).
  Returns:
    one record per mask: ``ious`` (max_points floats, the curve),
    ``oracle`` (best-of-3 IoU at 1 click), ``clicks`` ([x, y, label] each).
  """
  if not gts:
    return []
  predictor.set_image(image)
  out = []
  for lo in range(0, len(gts), chunk):
    out += _evaluate_group(predictor, gts[lo:lo + chunk], max_points, use_mask_input)
  return out


def _evaluate_group(predictor, gts, max_points, use_mask_input) -> list[dict]:
  """``evaluate_image`` for masks prompted together, the image already set."""
  n = len(gts)
  clickers = [Clicker(g) for g in gts]
  first = [c.click() for c in clickers]
  coords = np.array([[[c.x, c.y]] for c in first], np.float32)
  labels = np.ones((n, 1), np.int32)
  masks, scores, low = predict_prompts(predictor, point_coords=coords, point_labels=labels,
                                       multimask_output=True, chunk=n)
  top = np.argmax(scores, axis=1)
  oracle = [max(mask_iou(m, g) for m in ms) for ms, g in zip(masks, gts)]
  pred = [masks[i, top[i]] for i in range(n)]
  prev_low = [low[i, top[i]] for i in range(n)]
  del masks, low
  curve = [[mask_iou(pred[i], gts[i])] for i in range(n)]
  for _ in range(1, max_points):
    active = [i for i in range(n) if clickers[i].click(pred[i]) is not None]
    if active:
      prompts = [clickers[i].prompt() for i in active]
      mask_input = (np.stack([prev_low[i] for i in active])[:, None]
                    if use_mask_input else None)
      masks, _, low = predict_prompts(
          predictor, point_coords=np.stack([p[0] for p in prompts]),
          point_labels=np.stack([p[1] for p in prompts]), mask_input=mask_input,
          multimask_output=False, chunk=len(active))
      for j, i in enumerate(active):
        pred[i], prev_low[i] = masks[j, 0], low[j, 0]
    changed = set(active)
    for i in range(n):
      curve[i].append(mask_iou(pred[i], gts[i]) if i in changed else curve[i][-1])
  return [{"ious": curve[i], "oracle": oracle[i],
           "clicks": [[c.x, c.y, c.label] for c in clickers[i].clicks]}
          for i in range(n)]


def image_record(predictor, dataset, image_id, max_points: int, use_mask_input: bool,
                 chunk: int = 32) -> dict:
  """The per-image log record: ``masks`` (one entry per evaluated GT mask,
  with its annotation ``id``) and ``skipped_empty`` (GT masks with no pixel)."""
  anns, gts, skipped = [], [], 0
  for ann in dataset.instances(image_id):
    m = dataset.mask(ann)
    if m.any():
      anns.append(ann)
      gts.append(m)
    else:
      skipped += 1
  image = dataset.load_image(image_id) if gts else None
  recs = evaluate_image(predictor, image, gts, max_points, use_mask_input, chunk)
  return {"masks": [{"id": a["id"], **r} for a, r in zip(anns, recs)],
          "skipped_empty": skipped}


def summarize(records: list[dict], max_points: int) -> dict:
  """Per-image records -> the protocol's metrics (means over all masks)."""
  masks = [m for r in records for m in r["masks"]]
  n = len(masks)
  if n == 0:  # nothing to average: null in the JSON, not a number
    curve, oracle = [None] * max_points, None
  else:
    curve = np.mean([m["ious"] for m in masks], axis=0).tolist()
    oracle = float(np.mean([m["oracle"] for m in masks]))
  return {"miou_1pt": curve[0], "miou_1pt_oracle": oracle, "miou_curve": curve,
          "num_skipped_empty": sum(r["skipped_empty"] for r in records)}


def run(predictor, dataset, out: str, *, model: dict, max_points: int = 9,
        use_mask_input: bool = True, limit: int | None = None, chunk: int = 32,
        progress: bool = True) -> dict:
  """The protocol over ``dataset`` (a ``coco_gt.EvalDataset``); writes and
  returns the results document (resumes from ``out``'s per-image log)."""
  if max_points < 1:
    raise ValueError(f"--max-points must be >= 1, got {max_points}")
  settings = {"annotations": storage.resolve(dataset.source),
              "images": storage.resolve(dataset.images_dir),
              "max_points": max_points, "use_mask_input": use_mask_input}
  return run_protocol(
      protocol=PROTOCOL, out=out, settings=settings, model=model,
      image_ids=dataset.image_ids(limit),
      evaluate_image=lambda i: image_record(predictor, dataset, i, max_points,
                                            use_mask_input, chunk),
      summarize=lambda recs: summarize(recs, max_points),
      count_masks=lambda r: len(r["masks"]), progress=progress)

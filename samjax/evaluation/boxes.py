"""Protocol ``boxes``: box -> instance mask, scored by COCO mask AP.

Boxes come from a detector's COCO results JSON (``[{image_id, category_id,
bbox: [x, y, w, h], score}, ...]``, e.g. ViTDet's) or, without one, from
the GT annotations (non-crowd; score 1). Each box is one prompt with
single-mask output (``multimask_output=False``: a box is not ambiguous);
the mask keeps the box's category and score. All boxes of an image are
decoded on one image embedding, batched (``prompting``).

The masks are written as a COCO results JSON (RLE) and scored with
pycocotools' COCOeval ``segm`` (``coco_metrics.segm_ap``): ``ap``,
``ap_small``, ``ap_medium``, ``ap_large`` (and ``ap50``, ``ap75``).
Boxes are clipped to the image before prompting (detectors' boxes may reach
past it); the written masks keep the detections' scores and categories.
COCOeval is COCO's protocol; LVIS's federated AP needs the LVIS API, run on
the written masks file (docs/evaluation.md).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from data_pipelines import atomic_io, storage
from samjax.evaluation.coco_metrics import segm_ap
from samjax.evaluation.prompting import predict_prompts
from samjax.evaluation.runner import run_protocol
from samjax.inference.mask_io import encode_rle

PROTOCOL = "boxes"


def load_detections(path: str, dataset) -> dict[object, list[dict]]:
  """A COCO detection results JSON -> image id -> its detections.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a list of detections, or none on the dataset's images.
  """
  if not storage.isfile(path):
    raise FileNotFoundError(f"--detections: no such file: {path}")
  try:
    dets = json.loads(storage.read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"--detections {path} is not valid JSON ({e})") from e
  if not isinstance(dets, list):
    raise ValueError(f"--detections {path}: expected a list of COCO detection results")
  by_image = defaultdict(list)
  for k, d in enumerate(dets):
    if not isinstance(d, dict) or any(key not in d for key in
                                      ("image_id", "category_id", "bbox", "score")):
      raise ValueError(f"--detections {path}: entry {k} lacks image_id, category_id, "
                       "bbox or score")
    if len(d["bbox"]) != 4:
      raise ValueError(f"--detections {path}: entry {k} has bbox {d['bbox']} (want x, y, w, h)")
    by_image[d["image_id"]].append(
        {"bbox": [float(v) for v in d["bbox"]], "category_id": d["category_id"],
         "score": float(d["score"])})
  if dets and not set(by_image) & set(dataset.coco.imgs):
    raise ValueError(f"--detections {path}: none of its image ids is in "
                     f"{dataset.source}: detections for another dataset?")
  return dict(by_image)


def gt_boxes(dataset, image_id) -> list[dict]:
  """The GT instances' boxes as detections (score 1)."""
  return [{"bbox": [float(v) for v in a["bbox"]], "category_id": a["category_id"],
           "score": 1.0} for a in dataset.instances(image_id)]


def evaluate_image(predictor, image: np.ndarray, detections: list[dict],
                   chunk: int = 32) -> list[dict]:
  """One mask per detection: its ``category_id``, ``score`` and
  ``segmentation`` (COCO RLE of the [H, W] mask)."""
  if not detections:
    return []
  predictor.set_image(image)
  h, w = image.shape[:2]
  xywh = np.array([d["bbox"] for d in detections], np.float64)
  # Detectors' boxes may reach a little past the image; SAM takes boxes inside it.
  boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
  boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
  out = []
  for lo in range(0, len(boxes), chunk):
    masks, _, _ = predict_prompts(predictor, boxes=boxes[lo:lo + chunk],
                                  multimask_output=False, chunk=chunk)
    out += [{"category_id": d["category_id"], "score": d["score"],
             "segmentation": encode_rle(m[0])}
            for d, m in zip(detections[lo:lo + chunk], masks)]
  return out


def results_list(records: list[dict]) -> list[dict]:
  """Per-image log records -> one COCO results list (the masks file)."""
  return [{"image_id": r["image_id"], **d} for r in records for d in r["masks"]]


def run(predictor, dataset, out: str, *, model: dict, detections: str | None = None,
        masks_out: str | None = None, limit: int | None = None, chunk: int = 32,
        progress: bool = True) -> dict:
  """The protocol over ``dataset``; writes the masks file (default
  ``<out>.segm.json``) and ``out``, returns the results document."""
  dets = load_detections(detections, dataset) if detections else None
  image_ids = dataset.image_ids(limit)
  masks_out = masks_out or storage.splitext(out)[0] + ".segm.json"
  settings = {"annotations": storage.resolve(dataset.source),
              "images": storage.resolve(dataset.images_dir),
              "detections": storage.resolve(detections) if detections else None}

  def evaluate(image_id):
    prompts = dets.get(image_id, []) if dets is not None else gt_boxes(dataset, image_id)
    image = dataset.load_image(image_id) if prompts else None
    return {"image_id": image_id, "masks": evaluate_image(predictor, image, prompts, chunk)}

  def summarize(records):
    masks = results_list(records)
    atomic_io.write_json(masks_out, masks)
    return {**segm_ap(dataset.coco, masks, image_ids), "masks_file": storage.resolve(masks_out)}

  return run_protocol(protocol=PROTOCOL, out=out, settings=settings, model=model,
                      image_ids=image_ids, evaluate_image=evaluate, summarize=summarize,
                      count_masks=lambda r: len(r["masks"]), progress=progress)

"""The semi-automatic stage: masks filled in before the annotator starts.

``--prefill amg`` runs the automatic generator with strict thresholds
(confident masks only); ``--prefill detections.json`` sends the boxes of a
COCO detections file (any detector's output) through the predictor. Either
way the masks land in an "auto" layer the annotator accepts, rejects or
edits. The layer of each image is computed once, when the image is first
embedded, and kept in ``<out>/.annotate/auto/<stem>.json`` (atomic), so a
restart neither recomputes it nor brings back what was decided.
"""

from __future__ import annotations

import json

import numpy as np

from data_pipelines import atomic_io, storage
from samjax.inference.mask_io import decode_rle, encode_rle, mask_bbox_xywh
from samjax.inference.sa1b_records import image_id

# The generator's thresholds for pre-filled masks: stricter than its defaults
# (0.88 / 0.95), since every kept mask is one the annotator must review.
STRICT_AMG = dict(pred_iou_thresh=0.92, stability_score_thresh=0.96)


class AutoLayer:
  """Pre-filled objects of one image and what the annotator decided."""

  def __init__(self, out_dir: str, name: str):
    self.path = storage.join(out_dir, ".annotate", "auto",
                             storage.splitext(name)[0] + ".json")
    self.objects: list[dict] = []
    self.decided: dict[str, str] = {}
    self.exists = False
    try:
      doc = json.loads(storage.read_bytes(self.path))
      self.objects, self.decided = list(doc["objects"]), dict(doc["decided"])
      self.exists = True
    except FileNotFoundError:
      pass
    except (OSError, ValueError, KeyError, TypeError):
      self.objects, self.decided = [], {}  # damaged: computed again

  def pending(self) -> list[dict]:
    return [o for o in self.objects if o["id"] not in self.decided]

  def find(self, auto_id: str) -> dict:
    for o in self.pending():
      if o["id"] == auto_id:
        return o
    raise KeyError(f"no pending auto object {auto_id!r}")

  def decide(self, auto_id: str, decision: str) -> None:
    self.find(auto_id)
    self.decided[auto_id] = decision
    self.save()

  def fill(self, objects: list[dict], source: str) -> None:
    self.objects = [dict(o, id=f"auto-{i}", prefill=source) for i, o in enumerate(objects)]
    self.decided = {}
    self.save()

  def save(self) -> None:
    atomic_io.ensure_dir(storage.dirname(self.path))
    atomic_io.write_json(self.path, {"objects": self.objects, "decided": self.decided})
    self.exists = True

  def mask(self, obj: dict) -> np.ndarray:
    return decode_rle(obj["segmentation"])


def amg_objects(sam, rgb: np.ndarray, points_per_side: int) -> list[dict]:
  """Confident automatic masks of an HxWx3 image (``STRICT_AMG``)."""
  from samjax.inference.automatic_mask_generator import SamAutomaticMaskGenerator
  generator = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side,
                                        output_mode="coco_rle", **STRICT_AMG)
  return [dict(segmentation=r["segmentation"], bbox=r["bbox"], area=int(r["area"]),
               predicted_iou=float(r["predicted_iou"]),
               stability_score=float(r["stability_score"]),
               point_coords=r["point_coords"], box=None)
          for r in generator.generate(rgb)]


def read_detections(path: str, names: list[str], min_score: float) -> dict[str, list]:
  """{image name: [[x0, y0, x1, y1], ...]} from a COCO detections file: a
  list of {"image_id", "bbox": [x, y, w, h], "score", ...} (or with
  "file_name" instead of "image_id"). image_id is matched as `samjax amg`
  numbers images (sa_N -> N, else the CRC32 of the file name)."""
  try:
    dets = json.loads(storage.read_bytes(path))
  except (OSError, ValueError) as e:
    raise ValueError(f"--prefill {path}: not a readable JSON file ({e})") from e
  if isinstance(dets, dict) and "annotations" in dets:
    dets = dets["annotations"]
  if not isinstance(dets, list):
    raise ValueError(f"--prefill {path}: expected a list of detections")
  by_id = {image_id(n): n for n in names}
  out: dict[str, list] = {}
  for d in dets:
    try:
      name = d["file_name"] if "file_name" in d else by_id.get(int(d["image_id"]))
      x, y, w, h = (float(v) for v in d["bbox"])
      score = float(d.get("score", 1.0))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"--prefill {path}: a detection without image_id/bbox ({e})") from e
    if name in names and score >= min_score and w > 0 and h > 0:
      out.setdefault(name, []).append([x, y, x + w, y + h])
  return out


def box_objects(predict_boxes, boxes: list) -> list[dict]:
  """Masks for ``boxes`` [[x0, y0, x1, y1], ...] through
  ``predict_boxes(boxes [B, 4]) -> (masks [B, H, W], iou [B], stability [B])``."""
  if not boxes:
    return []
  masks, iou, stability = predict_boxes(np.asarray(boxes, np.float32))
  return [dict(segmentation=encode_rle(m), bbox=mask_bbox_xywh(m), area=int(m.sum()),
               predicted_iou=float(q), stability_score=float(s),
               point_coords=[[(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]], box=list(b))
          for m, q, s, b in zip(masks, iou, stability, boxes) if m.any()]

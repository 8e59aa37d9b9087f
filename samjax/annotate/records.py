"""One image's accepted objects: an SA-1B-layout JSON in the output folder,
with each object's provenance.

The document is what `samjax amg` writes (``image`` + ``annotations`` with
COCO RLE, bbox, area, predicted_iou, stability_score, crop_box,
point_coords), so `samjax data convert --src OUT` reads the folder as it is.
Every annotation also carries where it came from:

  source        "manual" | "auto" | "auto-edited"
  clicks        [[x, y, label], ...]   (label 1 foreground, 0 background)
  box           [x0, y0, x1, y1] or null
  strokes       number of brush / eraser strokes applied
  seconds       time from the object's first interaction to accept
  interactions  prompt and edit requests the object took
  annotator, checkpoint, round, accepted_at (UTC, ISO 8601)

Every change rewrites the file atomically (temp file + rename), after the
image copy beside it (<stem>.jpg, the converter's pair), so a kill at any
moment leaves the previous or the new document, never a torn one. A JSON in
the output folder that is not a whole record of this image (corrupt, or
another image's) is refused: the image is shown read-only and the file is
never overwritten.
"""

from __future__ import annotations

import datetime

import numpy as np

from data_pipelines import atomic_io, storage
from samjax.inference.mask_io import decode_rle, encode_rle, mask_bbox_xywh
from samjax.inference.sa1b_records import copy_problem, image_id, record_problem, write_copy

SOURCES = ("manual", "auto", "auto-edited")


class RecordRefused(ValueError):
  """The output folder holds a JSON for this image that samjax did not write
  (or that is damaged); it is reported and kept as it is."""


class ImageRecord:
  """The accepted objects of one image, backed by ``<out>/<stem>.json``."""

  def __init__(self, out_dir: str, name: str, height: int, width: int):
    self.name, self.height, self.width = name, height, width
    stem = storage.splitext(name)[0]
    self.path = storage.join(out_dir, stem + ".json")
    self.image_copy = storage.join(out_dir, stem + ".jpg")
    doc, problem = record_problem(self.path, name)
    if problem:
      raise RecordRefused(f"{problem}; it is left as it is (move it away to annotate "
                          f"{name})")
    if doc is not None and (doc["image"]["height"], doc["image"]["width"]) != (height, width):
      raise RecordRefused(f"{storage.basename(self.path)} says {doc['image']['width']}x"
                          f"{doc['image']['height']}, the image is {width}x{height}; "
                          "it is left as it is")
    self.annotations: list[dict] = list(doc["annotations"]) if doc else []

  def next_id(self) -> int:
    return 1 + max((int(a["id"]) for a in self.annotations), default=-1)

  def find(self, ann_id: int) -> dict:
    for a in self.annotations:
      if a["id"] == ann_id:
        return a
    raise KeyError(f"{self.name} has no object {ann_id}")

  def masks(self) -> list[np.ndarray]:
    return [decode_rle(a["segmentation"]) for a in self.annotations]

  def put(self, annotation: dict, image_path: str, decoded_image) -> None:
    """Adds ``annotation`` (replacing the one with its id) and saves."""
    kept = [a for a in self.annotations if a["id"] != annotation["id"]]
    self._save(sorted(kept + [annotation], key=lambda a: a["id"]), image_path, decoded_image)

  def delete(self, ann_id: int, image_path: str, decoded_image) -> None:
    self.find(ann_id)
    self._save([a for a in self.annotations if a["id"] != ann_id], image_path,
               decoded_image)

  def _save(self, annotations: list[dict], image_path: str, decoded_image) -> None:
    # The JPEG first: a JSON without its image would be skipped by the converter.
    if copy_problem(self.image_copy, image_path, self.width, self.height):
      write_copy(image_path, self.image_copy, decoded_image)
    doc = {"image": {"image_id": image_id(self.name), "width": self.width,
                     "height": self.height, "file_name": self.name},
           "annotations": annotations}
    atomic_io.write_json(self.path, doc)
    self.annotations = annotations


def make_annotation(ann_id: int, mask: np.ndarray, *, predicted_iou: float,
                    stability_score: float, clicks: list, box, strokes: int,
                    source: str, seconds: float, interactions: int, annotator: str,
                    checkpoint: str, round_name: str) -> dict:
  """An SA-1B annotation for ``mask`` [H, W] bool with its provenance."""
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}")
  h, w = mask.shape
  positive = [[float(x), float(y)] for x, y, label in clicks if label == 1]
  if positive:
    point_coords = positive
  elif box is not None:
    point_coords = [[(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0]]
  else:
    point_coords = []
  return {
      "id": int(ann_id), "segmentation": encode_rle(mask), "bbox": mask_bbox_xywh(mask),
      "area": int(np.count_nonzero(mask)), "predicted_iou": float(predicted_iou),
      "stability_score": float(stability_score), "crop_box": [0.0, 0.0, float(w), float(h)],
      "point_coords": point_coords, "source": source,
      "clicks": [[float(x), float(y), int(label)] for x, y, label in clicks],
      "box": None if box is None else [float(v) for v in box], "strokes": int(strokes),
      "seconds": round(float(seconds), 3), "interactions": int(interactions),
      "annotator": annotator, "checkpoint": checkpoint, "round": round_name,
      "accepted_at": datetime.datetime.now(datetime.UTC).isoformat(
          timespec="seconds"),
  }

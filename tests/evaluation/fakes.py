"""Model stand-ins with known answers: GT masks served through the official APIs."""

import hashlib

import numpy as np


def _key(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _gt_by_image(dataset):
  """image digest -> [(xyxy box, mask)] of its non-crowd GT instances."""
  out = {}
  for image_id in dataset.image_ids():
    inst = []
    for a in dataset.instances(image_id):
      x, y, w, h = a["bbox"]
      inst.append((np.array([x, y, x + w, y + h]), dataset.mask(a)))
    out[_key(dataset.load_image(image_id))] = inst
  return out


def _box_iou(a, b):
  lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
  inter = np.prod(np.clip(rb - lt, 0, None))
  area = lambda r: np.prod(r[2:] - r[:2])
  return inter / (area(a) + area(b) - inter)


class OraclePredictor:
  """Official ``SamPredictor`` API (no ``predict_batch``): a box prompt gets
  the GT mask whose box overlaps it most; ``damage=True`` shifts the k-th
  answer by k % 4 pixels, so masks have IoUs between ~0.5 and 1."""

  def __init__(self, dataset, damage: bool = False):
    self._gt = _gt_by_image(dataset)
    self._damage = damage
    self._calls = 0
    self.boxes_seen = []

  def set_image(self, image):
    self._inst = self._gt[_key(image)]
    self._hw = image.shape[:2]

  def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
              multimask_output=True, return_logits=False):
    box = np.asarray(box, float).reshape(4)
    self.boxes_seen.append((box, self._hw))
    mask = max(self._inst, key=lambda bm: _box_iou(bm[0], box))[1]
    if self._damage:
      mask = np.roll(mask, self._calls % 4, axis=1)
      self._calls += 1
    return mask[None], np.ones(1, np.float32), np.zeros((1, 256, 256), np.float32)


class GtGenerator:
  """Official ``SamAutomaticMaskGenerator.generate`` API: the image's GT masks
  (binary), plus with ``noise`` shifted copies and random blobs of lower score."""

  def __init__(self, dataset, noise: bool = False):
    self._gt = _gt_by_image(dataset)
    self._noise = noise

  def generate(self, image):
    rng = np.random.default_rng(int(image.sum()))
    out = []
    for k, (_, m) in enumerate(self._gt[_key(image)]):
      if self._noise:
        out.append({"segmentation": np.roll(m, 2 + k, axis=0), "predicted_iou": 0.9 - k / 10,
                    "stability_score": 0.5 + k / 10})
        if k % 2:
          out.append({"segmentation": m, "predicted_iou": 0.3, "stability_score": 1.0})
        blob = rng.random(m.shape) < 0.05
        out.append({"segmentation": blob, "predicted_iou": float(rng.random()),
                    "stability_score": 0.9})
      else:
        out.append({"segmentation": m, "predicted_iou": 1.0, "stability_score": 1.0})
    return out

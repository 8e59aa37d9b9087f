"""SAM's zero-shot edge detector (paper section 7.2, appendix D.2).

One image -> an edge map in [0, 1]:

  1. a regular grid of ``points_per_side``^2 foreground points (16x16: the
     automatic mask generator's grid, cell centres) -> 3 masks each (the
     multimask outputs): 768 masks, no predicted-IoU or stability filter;
  2. redundant masks removed by greedy box NMS (IoU 0.7, ranked by predicted
     IoU; the generator's NMS, torchvision semantics; boxes of the masks at
     logit 0); empty masks are dropped (they have no boundary);
  3. the kept masks' boundary-gated Sobel responses on their probability
     maps, max over masks (``edges_response``);
  4. linearly normalised to [0, 1] (min-max; all zero if constant);
  5. edge NMS (``edges_nms``: the structured-edge toolbox's thinning).

The masks come from any predictor with the official ``SamPredictor`` API:
samjax's (``predict_batch``: a batch of points in one call), the official
PyTorch one (``predict_torch``, likewise) or anything with ``predict`` (one
point per call), so both implementations run the same protocol code.
Decoding runs twice over the batches that hold kept masks, once for boxes
and scores and once for the edge responses, so only one batch of
full-resolution logits is held at a time.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from samjax.evaluation.edges_nms import edge_nms
from samjax.evaluation.edges_response import masks_edge_response
from samjax.inference import amg_kernels
from samjax.inference.amg_utils import build_point_grid

# Masks per edge-response call (bounds the accelerator's working set).
RESPONSE_CHUNK = 48


@dataclasses.dataclass(frozen=True)
class EdgeSettings:
  """The protocol's knobs (the paper's values by default)."""
  points_per_side: int = 16
  box_nms_thresh: float = 0.7
  points_per_batch: int = 64

  def __post_init__(self):
    if self.points_per_side < 1:
      raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
    if not 0.0 < self.box_nms_thresh <= 1.0:
      raise ValueError(f"box_nms_thresh must be in (0, 1], got {self.box_nms_thresh}")
    if self.points_per_batch < 1:
      raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")


@dataclasses.dataclass
class EdgeResult:
  edges: np.ndarray   # [H, W] float32 in [0, 1], after edge NMS
  n_masks: int        # masks predicted (3 per point)
  n_kept: int         # masks left after NMS


def grid_points(height: int, width: int, points_per_side: int) -> np.ndarray:
  """[n^2, 2] (x, y) pixel coordinates of the regular grid (the generator's)."""
  return build_point_grid(points_per_side) * np.array([[width, height]], np.float64)


def _decode(predictor, points: np.ndarray):
  """[B, 2] points of the set image -> (logits [B*3, H, W], iou [B*3]),
  point-major like the automatic mask generator."""
  labels = np.ones((len(points), 1), np.int32)
  if hasattr(predictor, "predict_batch"):  # samjax
    masks, iou, _ = predictor.predict_batch(
        point_coords=points[:, None, :], point_labels=labels,
        multimask_output=True, return_logits=True)
  elif hasattr(predictor, "predict_torch"):  # the official predictor, batched
    import torch
    coords = predictor.transform.apply_coords(points[:, None, :], predictor.original_size)
    masks, iou, _ = predictor.predict_torch(
        torch.as_tensor(coords, dtype=torch.float, device=predictor.device),
        torch.as_tensor(labels, device=predictor.device),
        multimask_output=True, return_logits=True)
    masks, iou = masks.float().cpu().numpy(), iou.float().cpu().numpy()
  else:  # any predictor with the official single-prompt API
    outs = [predictor.predict(point_coords=p[None], point_labels=np.array([1]),
                              multimask_output=True, return_logits=True) for p in points]
    masks = np.stack([np.asarray(o[0]) for o in outs])
    iou = np.stack([np.asarray(o[1]) for o in outs])
  masks = np.asarray(masks, np.float32)
  return masks.reshape(-1, *masks.shape[-2:]), np.asarray(iou, np.float32).reshape(-1)


def _boxes(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[K, H, W] logits -> (xyxy boxes [K, 4] float32, inclusive pixel indices,
  of the masks at logit 0; nonempty [K] bool)."""
  m = logits > 0.0
  rows, cols = m.any(axis=2), m.any(axis=1)
  nonempty = rows.any(axis=1)
  h, w = m.shape[1:]
  y0 = np.argmax(rows, axis=1)
  y1 = h - 1 - np.argmax(rows[:, ::-1], axis=1)
  x0 = np.argmax(cols, axis=1)
  x1 = w - 1 - np.argmax(cols[:, ::-1], axis=1)
  boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
  boxes[~nonempty] = 0.0
  return boxes, nonempty


def _response(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """Edge response of the kept rows of [K, H, W] logits, in fixed-size chunks."""
  out = None
  for s in range(0, len(logits), RESPONSE_CHUNK):
    chunk, k = logits[s:s + RESPONSE_CHUNK], keep[s:s + RESPONSE_CHUNK]
    if not k.any():
      continue
    n = len(chunk)
    if n < RESPONSE_CHUNK:  # pad: one compiled program per image size
      chunk = np.concatenate([chunk, np.zeros((RESPONSE_CHUNK - n, *chunk.shape[1:]),
                                              chunk.dtype)])
      k = np.concatenate([k, np.zeros(RESPONSE_CHUNK - n, bool)])
    r = masks_edge_response(chunk, k)
    out = r if out is None else np.maximum(out, r)
  return np.zeros(logits.shape[1:], np.float32) if out is None else np.asarray(out)


def detect_edges(predictor, image: np.ndarray, settings: EdgeSettings = EdgeSettings()
                 ) -> EdgeResult:
  """Edge map of one HxWx3 uint8 RGB image with a SAM predictor."""
  predictor.set_image(image)
  h, w = image.shape[:2]
  points = grid_points(h, w, settings.points_per_side)
  batches = [points[s:s + settings.points_per_batch]
             for s in range(0, len(points), settings.points_per_batch)]
  boxes, scores, nonempty = [], [], []
  for batch in batches:
    logits, iou = _decode(predictor, batch)
    b, ne = _boxes(logits)
    boxes.append(b)
    scores.append(iou)
    nonempty.append(ne)
  boxes, scores, nonempty = (np.concatenate(x) for x in (boxes, scores, nonempty))
  candidates = np.flatnonzero(nonempty)
  kept = candidates[amg_kernels.nms_host(boxes[candidates], scores[candidates],
                                         settings.box_nms_thresh)]
  keep = np.zeros(len(scores), bool)
  keep[kept] = True

  response = np.zeros((h, w), np.float32)
  start = 0
  for batch in batches:
    k = keep[start:start + 3 * len(batch)]
    start += 3 * len(batch)
    if k.any():  # the same batch as before: the same logits
      logits, _ = _decode(predictor, batch)
      response = np.maximum(response, _response(logits, k))
  lo, hi = float(response.min()), float(response.max())
  normalised = (response - lo) / (hi - lo) if hi > lo else np.zeros_like(response)
  return EdgeResult(edges=edge_nms(normalised), n_masks=len(scores), n_kept=int(keep.sum()))

"""Many prompts of one image through any predictor with the official API.

The protocols take a *predictor-like* object: anything with the official
``SamPredictor`` methods ``set_image`` and ``predict``. samjax's predictor
also has ``predict_batch`` (B prompts in one jitted call on the cached
embedding); it is used when present, in chunks of ``chunk`` prompts, and
the official predictor gets one ``predict`` call per prompt. Both paths
return the same arrays, so the protocol code is the same for both.
"""

from __future__ import annotations

import numpy as np


def predict_prompts(predictor, *, point_coords: np.ndarray | None = None,
                    point_labels: np.ndarray | None = None,
                    boxes: np.ndarray | None = None,
                    mask_input: np.ndarray | None = None,
                    multimask_output: bool, chunk: int = 32):
  """B prompts of the image set on ``predictor``.

  Args:
    point_coords: [B, N, 2] (x, y) pixels; point_labels [B, N].
    boxes: [B, 4] (x0, y0, x1, y1) pixels.
    mask_input: [B, 1, L, L] low-res logits of earlier calls.
    multimask_output: 3 masks per prompt if True, else 1.
    chunk: prompts per ``predict_batch`` call (bounds host memory: full-size
      masks come back).
  Returns:
    masks [B, C, H, W] bool, iou_predictions [B, C] float32,
    low_res_logits [B, C, L, L] float32.
  """
  sizes = {len(a) for a in (point_coords, boxes, mask_input) if a is not None}
  if len(sizes) != 1:
    raise ValueError(f"prompts of different counts {sorted(sizes)} (or none)")
  b = sizes.pop()
  if b == 0:
    raise ValueError("no prompts (B = 0): the caller skips images without any")
  parts = []
  batched = getattr(predictor, "predict_batch", None)
  step = chunk if batched is not None else 1
  for lo in range(0, b, step):
    sl = slice(lo, lo + step)
    pc = None if point_coords is None else point_coords[sl]
    pl = None if point_labels is None else point_labels[sl]
    bx = None if boxes is None else boxes[sl]
    mi = None if mask_input is None else mask_input[sl]
    if batched is not None:
      parts.append(batched(point_coords=pc, point_labels=pl, boxes=bx, mask_input=mi,
                           multimask_output=multimask_output))
    else:
      out = predictor.predict(point_coords=None if pc is None else pc[0],
                              point_labels=None if pl is None else pl[0],
                              box=None if bx is None else bx[0],
                              mask_input=None if mi is None else mi[0],
                              multimask_output=multimask_output)
      parts.append(tuple(np.asarray(a)[None] for a in out))
  masks, iou, low = (np.concatenate([p[i] for p in parts]) for i in range(3))
  return masks.astype(bool), iou.astype(np.float32), low.astype(np.float32)

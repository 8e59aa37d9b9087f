"""Input checks for the predictor: every bad input gets a message that says
what was wrong and what is expected (instead of a shape error deep in jit)."""

from __future__ import annotations

import numpy as np

# Official point labels: 1 foreground, 0 background, -1 "not a point".
POINT_LABELS = (1, 0, -1)
LABELS_TEXT = "1 (foreground), 0 (background) or -1 (not a point: ignored)"


def check_image(image, image_format: str) -> np.ndarray:
  """HxWx3 uint8 RGB/BGR; returns it as RGB."""
  if image_format not in ("RGB", "BGR"):
    raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
  if not isinstance(image, np.ndarray):
    raise TypeError(f"image must be a numpy array (HxWx3 uint8), got {type(image).__name__}")
  if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
    raise ValueError(f"image has shape {image.shape}: a grayscale image; SAM needs HxWx3 "
                     "RGB (e.g. np.repeat(img[..., None], 3, axis=2))")
  if image.ndim == 3 and image.shape[2] == 4:
    raise ValueError(f"image has shape {image.shape}: RGBA; drop the alpha channel "
                     "first (image[..., :3])")
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image must be HxWx3, got shape {image.shape}")
  if image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 with values in [0, 255], got {image.dtype} "
                     "(for float images in [0, 1]: (img * 255).round().astype(np.uint8))")
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f"image is empty: shape {image.shape}")
  return image[..., ::-1] if image_format == "BGR" else image


def _finite(name: str, array: np.ndarray):
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} contains NaN or infinite values: {array.tolist()}")


def check_points(coords, labels, batched: bool) -> tuple[np.ndarray, np.ndarray]:
  """coords [(B,) N, 2] (x, y) pixels; labels [(B,) N] in {1, 0, -1}.

  Points outside the image are taken, as officially (see ``check_inside``).

  Label -1 is the official "not a point" (what the official code pads point
  lists with): its coordinates are ignored (not even range-checked) and it
  enters the decoder as the not-a-point token, exactly as officially.
  """
  if labels is None:
    raise ValueError("point_labels must be given with point_coords")
  coords = np.asarray(coords, np.float64)
  labels = np.asarray(labels)
  lead = 2 if batched else 1
  if coords.ndim != lead + 1 or coords.shape[-1] != 2:
    want = "BxNx2" if batched else "Nx2"
    raise ValueError(f"point_coords must be {want} (x, y), got shape {coords.shape}")
  if labels.shape != coords.shape[:-1]:
    raise ValueError(f"point_labels shape {labels.shape} does not match point_coords "
                     f"{coords.shape} (one label per point)")
  if coords.shape[-2] == 0:
    raise ValueError("point_coords holds no points; pass None instead")
  _finite("point_coords", coords)
  bad = ~np.isin(labels, POINT_LABELS)
  if bad.any():
    raise ValueError(f"point_labels must be {LABELS_TEXT}; got "
                     f"{sorted(set(np.asarray(labels)[bad].tolist()))}")
  return coords, labels.astype(np.int32)


def check_inside(coords, labels, boxes, image_hw: tuple[int, int]) -> None:
  """Refuses points (label != -1) and boxes outside the image.

  The predictor itself takes them (the official one just transforms them;
  the model extrapolates its positional encoding); command lines call this
  because there a point outside the image is almost always a typo.

  Args:
    coords: [N, 2] (x, y) or None; labels: [N] or None; boxes: [4] or None.
  """
  h, w = image_hw
  if coords is not None:
    coords, labels = np.asarray(coords, np.float64), np.asarray(labels)
    outside = ((coords[..., 0] < 0) | (coords[..., 0] > w) |
               (coords[..., 1] < 0) | (coords[..., 1] > h)) & (labels != -1)
    if outside.any():
      first = coords[outside][0].tolist()
      raise ValueError(f"{int(outside.sum())} point(s) outside the {w}x{h} (WxH) image, "
                       f"e.g. (x, y) = {first}")
  if boxes is not None:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    outside = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
    if outside.any():
      raise ValueError(f"box {b[outside][0].tolist()} extends outside the {w}x{h} (WxH) "
                       "image")


def check_some_prompt(labels, has_box, has_mask) -> None:
  """Each prompt needs a real point, a box or a mask input: points that are
  all "not a point" (-1) alone give the model nothing to segment.

  Args:
    labels: [B, N] checked labels, or None; has_box / has_mask: [B] bool.
  """
  if labels is None:
    return
  empty = np.all(labels == -1, axis=-1) & ~np.asarray(has_box) & ~np.asarray(has_mask)
  if empty.any():
    which = "" if len(empty) == 1 else f" (prompt {int(np.flatnonzero(empty)[0])})"
    raise ValueError(f"every point label is -1 (not a point) and no box or mask_input is "
                     f"given{which}: nothing to segment; point_labels must be "
                     f"{LABELS_TEXT}")


def check_boxes(boxes, batched: bool) -> np.ndarray:
  """[(B,) 4] x0, y0, x1, y1 with x0 <= x1, y0 <= y1 (may reach outside the image).

  Unbatched, a 1x4 box is taken too (the official notebook passes
  ``input_box[None, :]``); it comes back as length 4.
  """
  boxes = np.asarray(boxes, np.float64)
  if not batched and boxes.shape == (1, 4):
    boxes = boxes[0]
  want = (boxes.shape[0], 4) if batched and boxes.ndim == 2 else (4,)
  if boxes.shape != want or (batched and boxes.ndim != 2):
    raise ValueError(f"box must be {'Bx4' if batched else 'a length-4 (or 1x4) array'} "
                     f"(x0, y0, x1, y1), got shape {boxes.shape}")
  _finite("box", boxes)
  b = boxes.reshape(-1, 4)
  flipped = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
  if flipped.any():
    raise ValueError(f"box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0; got "
                     f"{b[flipped][0].tolist()}")
  return boxes


def check_mask_input(mask_input, size: int, batched: bool) -> np.ndarray | None:
  """[(B,) 1, size, size] low-res logits from a previous prediction."""
  mask_input = np.asarray(mask_input, np.float32)
  tail = (1, size, size)
  ok = mask_input.shape[-3:] == tail and mask_input.ndim == (4 if batched else 3)
  if not ok:
    want = f"{'Bx' if batched else ''}1x{size}x{size}"
    raise ValueError(f"mask_input must be {want} low-res logits (a previous "
                     f"prediction's low_res_logits[i:i+1]), got shape {mask_input.shape}")
  _finite("mask_input", mask_input)
  return mask_input


def check_finite_settings(**settings: float) -> None:
  """Threshold-like settings must be finite numbers: NaN compares False with
  everything, so ``pred_iou_thresh=nan`` would silently keep no mask at all."""
  for name, value in settings.items():
    try:
      ok = np.isfinite(float(value))
    except (TypeError, ValueError):
      raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not ok:
      raise ValueError(f"{name} must be a finite number, got {value!r}")

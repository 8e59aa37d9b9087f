"""``SamPredictor``: the official predictor's API over ``samjax.SamPredictor``.

``predict`` is numpy in and out as officially; ``predict_torch``,
``set_torch_image``, ``get_image_embedding`` and ``features`` speak torch
when it is installed (numpy otherwise). Coordinates given to
``predict_torch`` are already in the resized frame (``self.transform``),
as officially.
"""

from __future__ import annotations

import numpy as np

from samjax.inference.predictor import SamPredictor as _CorePredictor
from samjax.segment_anything import tensors
from samjax.segment_anything.modeling.sam import Sam
from samjax.segment_anything.utils.transforms import ResizeLongestSide


class SamPredictor:
  """Embeds an image once, then answers prompts (official semantics)."""

  def __init__(self, sam_model: Sam, *, warmup: bool = False) -> None:
    """``warmup=True`` (samjax's addition): compile the first prompts'
    programs at every ``set_image`` (``samjax.SamPredictor.warm_up``)."""
    if not isinstance(sam_model, Sam):
      raise TypeError("samjax.segment_anything.SamPredictor takes a model from "
                      "samjax.segment_anything.sam_model_registry[...](checkpoint=...), "
                      f"got {type(sam_model).__name__}")
    self.model = sam_model
    self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
    self._core = _CorePredictor(sam_model.loaded, warmup=warmup)

  # ---- state (the core predictor's, seen the official way) ---------------
  @property
  def is_image_set(self) -> bool:
    return self._core.is_image_set

  @property
  def original_size(self):
    return self._core.original_size

  @property
  def input_size(self):
    return self._core.input_size

  @property
  def features(self):
    """[1, C, h, w] embedding of the current image (None before ``set_image``)."""
    if self._core.features is None:
      return None
    return tensors.to_output(np.asarray(self._core.features), self.device)

  @property
  def device(self):
    return self.model.device

  # ---- image ---------------------------------------------------------------
  def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
    """Embeds an HxWx3 uint8 image in ``image_format`` ('RGB' or 'BGR')."""
    if image_format not in ("RGB", "BGR"):
      raise ValueError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
    # Flip when the image's order differs from the model's, as officially.
    fmt = "RGB" if image_format == self.model.image_format else "BGR"
    self._core.set_image(np.asarray(image), fmt)

  def set_torch_image(self, transformed_image, original_image_size) -> None:
    """Embeds a 1x3xHxW image already resized by ``self.transform``
    (longest side ``img_size``) whose size before resizing was (H, W)."""
    x = tensors.to_numpy(transformed_image)
    size = self.model.image_encoder.img_size
    if x.ndim != 4 or x.shape[:2] != (1, 3) or max(x.shape[2:]) != size:
      raise ValueError(f"set_torch_image input must be 1x3xHxW with long side {size}, "
                       f"got shape {tuple(x.shape)}")
    self._core.set_transformed_image(x[0].transpose(1, 2, 0),
                                     tensors.size_hw(original_image_size))

  def get_image_embedding(self):
    """[1, C, h, w] embedding (torch when installed)."""
    if not self.is_image_set:
      raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
    return self.features

  def reset_image(self) -> None:
    self._core.reset_image()

  # ---- prompts -------------------------------------------------------------
  def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
              multimask_output: bool = True, return_logits: bool = False):
    """One prompt in the original image frame (numpy in and out).

    Returns:
      masks CxHxW bool (float32 logits with ``return_logits``), scores C
      float32, low-res logits Cx256x256 float32.
    """
    if not self.is_image_set:
      raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
    if point_coords is not None and point_labels is None:
      raise ValueError("point_labels must be supplied if point_coords is supplied.")
    return self._core.predict(
        tensors.to_numpy(point_coords), tensors.to_numpy(point_labels),
        tensors.to_numpy(box), tensors.to_numpy(mask_input),
        multimask_output=multimask_output, return_logits=return_logits)

  def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                    multimask_output: bool = True, return_logits: bool = False):
    """B prompts already in the resized frame (``self.transform.apply_*_torch``).

    Args:
      point_coords: BxNx2 or None; point_labels: BxN; boxes: Bx4; mask_input:
        Bx1x256x256 (torch or numpy).
    Returns:
      masks BxCxHxW bool (or logits), scores BxC, low-res logits
      BxCx256x256: torch tensors on ``self.device`` when torch is installed.
    """
    if not self.is_image_set:
      raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
    masks, iou, low = self._core.predict_batch(
        tensors.to_numpy(point_coords), tensors.to_numpy(point_labels),
        tensors.to_numpy(boxes), tensors.to_numpy(mask_input),
        multimask_output=multimask_output, return_logits=return_logits, transformed=True)
    return tuple(tensors.to_output(x, self.device) for x in (masks, iou, low))

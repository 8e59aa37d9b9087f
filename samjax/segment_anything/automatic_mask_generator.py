"""``SamAutomaticMaskGenerator``: the official constructor over samjax's generator."""

from __future__ import annotations

import functools

import numpy as np

from samjax.inference.automatic_mask_generator import (
  SamAutomaticMaskGenerator as _CoreGenerator,
)
from samjax.segment_anything.modeling.sam import Sam
from samjax.segment_anything.predictor import SamPredictor


class SamAutomaticMaskGenerator(_CoreGenerator):
  """Masks for a whole image from a grid of point prompts; ``generate(image)``
  returns the official records (``segmentation``, ``area``, ``bbox``,
  ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box``)."""

  def __init__(self, model: Sam, points_per_side: int | None = 32,
               points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
               stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
               box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
               crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
               crop_n_points_downscale_factor: int = 1,
               point_grids: list[np.ndarray] | None = None,
               min_mask_region_area: int = 0, output_mode: str = "binary_mask") -> None:
    if not isinstance(model, Sam):
      raise TypeError("samjax.segment_anything.SamAutomaticMaskGenerator takes a model "
                      "from samjax.segment_anything.sam_model_registry[...](checkpoint=...), "
                      f"got {type(model).__name__}")
    super().__init__(
        model.loaded, points_per_side=points_per_side, points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
        stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
        crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
        crop_overlap_ratio=crop_overlap_ratio,
        crop_n_points_downscale_factor=crop_n_points_downscale_factor,
        point_grids=point_grids, min_mask_region_area=min_mask_region_area,
        output_mode=output_mode)
    self.sam = model

  @functools.cached_property
  def predictor(self) -> SamPredictor:
    """The official attribute; built on first use (the generator itself
    decodes with its own batched programs)."""
    return SamPredictor(self.sam)

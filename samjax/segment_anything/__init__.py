"""Drop-in for the official ``segment_anything`` package.

``from samjax.segment_anything import sam_model_registry, SamPredictor``
instead of ``from segment_anything import ...`` is the only change official
notebooks and scripts need: same names, signatures and return types (torch
tensors where the official returns them, when torch is installed; numpy
otherwise), computed by samjax in JAX. torch is imported only when a torch
tensor is made or given.
"""

from samjax.segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
from samjax.segment_anything.build_sam import (
  build_sam,
  build_sam_vit_b,
  build_sam_vit_h,
  build_sam_vit_l,
  sam_model_registry,
)
from samjax.segment_anything.predictor import SamPredictor

__all__ = [
  "SamAutomaticMaskGenerator",
  "SamPredictor",
  "build_sam",
  "build_sam_vit_b",
  "build_sam_vit_h",
  "build_sam_vit_l",
  "sam_model_registry",
]

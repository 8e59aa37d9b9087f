"""Flax Linen SAM model (image encoder, prompt encoder, mask decoder)."""

from samjax.model.configs import (
                                  OFFICIAL_VARIANTS,
                                  PIXEL_MEAN,
                                  PIXEL_STD,
                                  VARIANTS,
                                  SamConfig,
                                  get_config,
                                  variant_name,
)
from samjax.model.prompts import Prompts
from samjax.model.sam import Sam, SamModel, build

__all__ = [
                                  "OFFICIAL_VARIANTS",
                                  "PIXEL_MEAN",
                                  "PIXEL_STD",
                                  "VARIANTS",
                                  "Prompts",
                                  "Sam",
                                  "SamConfig",
                                  "SamModel",
                                  "build",
                                  "get_config",
                                  "variant_name",
]

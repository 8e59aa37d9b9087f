"""samjax: Segment Anything in JAX/Flax, trainable at scale, weights interoperable
with the official PyTorch release."""

__version__ = "0.1.0"

from samjax.inference.automatic_mask_generator import SamAutomaticMaskGenerator
from samjax.inference.predictor import SamPredictor
from samjax.loading import LoadedSam, load_sam
from samjax.model import SamConfig, SamModel, build, get_config

__all__ = [
           "LoadedSam",
           "SamAutomaticMaskGenerator",
           "SamConfig",
           "SamModel",
           "SamPredictor",
           "__version__",
           "build",
           "get_config",
           "load_sam",
]

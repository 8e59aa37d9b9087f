"""samjax: Segment Anything in JAX/Flax, trainable at scale, weights interoperable
with the official PyTorch release."""

__version__ = "0.1.0"

from samjax.inference.predictor import SamPredictor  # noqa: E402
from samjax.loading import LoadedSam, load_sam  # noqa: E402
from samjax.model import SamConfig, SamModel, build, get_config  # noqa: E402

__all__ = ["LoadedSam", "SamConfig", "SamModel", "SamPredictor", "build", "get_config",
           "load_sam", "__version__"]

"""samjax: Segment Anything in JAX/Flax, trainable at scale, weights interoperable
with the official PyTorch release."""

__version__ = "0.1.0"

# Before jax loads: libtpu (installed for `samjax plan`) stays quiet on hosts
# without a TPU.
from samjax.hardware import quiet_libtpu_without_tpu

quiet_libtpu_without_tpu()

from samjax.compile_cache import enable_compile_cache  # noqa: E402
from samjax.inference.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from samjax.inference.predictor import SamPredictor  # noqa: E402
from samjax.loading import LoadedSam, load_sam  # noqa: E402
from samjax.model import SamConfig, SamModel, build, get_config  # noqa: E402

__all__ = [
           "LoadedSam",
           "SamAutomaticMaskGenerator",
           "SamConfig",
           "SamModel",
           "SamPredictor",
           "__version__",
           "build",
           "enable_compile_cache",
           "get_config",
           "load_sam",
]

"""samjax: Segment Anything in JAX/Flax, trainable at scale, weights interoperable
with the official PyTorch release.

``import samjax`` is cheap and changes nothing: no jax backend, no jax
config, no environment variable. The names below are imported the first time
they are used (``samjax.load_sam``, ``samjax.SamPredictor``, ...).

The base install (``pip install samjax``) has what inference needs:
``load_sam`` (model directories, ``.safetensors``, and ``.pth`` with the
``torch`` extra), ``SamPredictor``, ``SamAutomaticMaskGenerator``, the
``samjax.segment_anything`` drop-in and ``samjax segment`` / ``samjax amg``.
Training, data preparation, evaluation and planning are extras (``train``,
``data``, ``eval``, ``plan``, ``cloud``, ``torch``); a feature whose extra is
missing says which in one line (``samjax.extras``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it, imported on first access.
_LAZY = {
    "LoadedSam": "samjax.loading",
    "load_sam": "samjax.loading",
    "SamPredictor": "samjax.inference.predictor",
    "SamAutomaticMaskGenerator": "samjax.inference.automatic_mask_generator",
    "Prompts": "samjax.model",
    "SamConfig": "samjax.model",
    "SamModel": "samjax.model",
    "build": "samjax.model",
    "get_config": "samjax.model",
    "enable_compile_cache": "samjax.compile_cache",
}

__all__ = [
           "LoadedSam",
           "Prompts",
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


def __getattr__(name: str):
  module = _LAZY.get(name)
  if module is None:
    raise AttributeError(f"module 'samjax' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))

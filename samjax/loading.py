"""Loading a model from whatever the user has: a samjax model directory or an
official ``.pth`` (and, once training lands, a training workdir)."""

from __future__ import annotations

import os

from samjax.model.configs import SamConfig


def load_config_and_params(path: str, variant: str | None = None
                           ) -> tuple[SamConfig, dict]:
  """(config, params) from a samjax model directory or an official ``.pth``."""
  from samjax import interop
  if os.path.isdir(path):
    if interop.model_dir.is_model_dir(path):
      config, params = interop.load_model_dir(path)
      if variant is not None:
        from samjax.model.configs import get_config
        if not get_config(variant).same_architecture(config):
          raise ValueError(f"{path} holds {interop.infer.describe(config)}, "
                           f"not {variant}")
      return config, params
    raise FileNotFoundError(f"{path} is a directory but not a samjax model "
                            "directory (no samjax_model.json)")
  if os.path.isfile(path):
    return interop.import_official(path, variant)
  raise FileNotFoundError(f"no such checkpoint: {path}")

"""Loading a model from whatever the user has: a samjax model directory or an
official ``.pth`` (and, once training lands, a training workdir)."""

from __future__ import annotations

import dataclasses
import os

from samjax.model.configs import SamConfig
from samjax.model.sam import SamModel


@dataclasses.dataclass(frozen=True)
class LoadedSam:
  """A model with its weights: what ``SamPredictor`` and the generators take.

  The counterpart of the official ``sam_model_registry[v](checkpoint=...)``.
  """
  model: SamModel
  params: dict
  source: str | None = None
  image_format: str = "RGB"

  @property
  def config(self) -> SamConfig:
    return self.model.config

  @property
  def image_size(self) -> int:
    return self.model.config.image_size


def load_sam(path: str, variant: str | None = None, **compute_overrides) -> LoadedSam:
  """Loads a converted samjax model directory or an official ``.pth``.

  Args:
    path: model directory (``samjax convert --from-torch``) or ``.pth``.
    variant: expected size ('vit_b', ...); inferred from the weights if None.
    **compute_overrides: non-architecture config fields, e.g. ``dtype='bfloat16'``
      or ``attention_impl='cudnn'``.
  """
  config, params = load_config_and_params(path, variant)
  bad = sorted(set(compute_overrides) & set(SamConfig.ARCH_FIELDS))
  if bad:
    raise ValueError(f"cannot override architecture fields {bad} of a checkpoint")
  if compute_overrides:
    config = config.replace(**compute_overrides)
  return LoadedSam(SamModel(config), params, source=path)


def load_config_and_params(path: str, variant: str | None = None
                           ) -> tuple[SamConfig, dict]:
  """(config, params) from a samjax model directory or an official ``.pth``."""
  from samjax import interop
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "model_config.json")) and os.path.isdir(
        os.path.join(path, "checkpoints")):
      return _load_training_workdir(path, variant)
    if interop.model_dir.is_model_dir(path):
      config, params = interop.load_model_dir(path)
      if variant is not None:
        from samjax.model.configs import get_config
        if not get_config(variant).same_architecture(config):
          raise ValueError(f"{path} holds {config.describe()}, "
                           f"not {variant}")
      return config, params
    raise FileNotFoundError(f"{path} is a directory but neither a samjax model "
                            "directory (no samjax_model.json) nor a training workdir "
                            "(no model_config.json + checkpoints/)")
  if os.path.isfile(path):
    return interop.import_official(path, variant)
  raise FileNotFoundError(f"no such checkpoint: {path}")


def _load_training_workdir(path: str, variant: str | None):
  """Params of the latest checkpoint of a ``samjax train`` workdir."""
  import json

  import jax
  import numpy as np

  from samjax.model.configs import get_config
  from samjax.train.checkpointing import Checkpointer
  with open(os.path.join(path, "model_config.json")) as f:
    config = SamConfig.from_dict(json.load(f))
  if variant is not None and not get_config(variant).same_architecture(config):
    raise ValueError(f"training workdir {path} holds a different model than {variant}")
  ckpt = Checkpointer(path, async_save=False)
  try:
    params = ckpt.restore_params()
  finally:
    ckpt.close()
  return config, jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)

"""Loading a model from whatever the user has: a samjax model directory, a
training workdir or an official ``.pth`` (layouts in ``samjax.formats``)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from samjax import formats
from samjax.model.block_stacking import convert_block_layout
from samjax.model.configs import SamConfig, get_config
from samjax.model.sam import SamModel


@dataclasses.dataclass(frozen=True)
class LoadedSam:
  """A model with its weights: what ``SamPredictor`` and the generators take.

  The counterpart of the official ``sam_model_registry[v](checkpoint=...)``.
  """
  model: SamModel
  params: dict

  @property
  def config(self) -> SamConfig:
    return self.model.config

  @property
  def image_size(self) -> int:
    return self.model.config.image_size


def load_sam(path: str, variant: str | None = None, **compute_overrides) -> LoadedSam:
  """Loads a converted samjax model directory, a training workdir or an official ``.pth``.

  Args:
    path: model directory (``samjax convert --from-torch``), ``samjax train``
      workdir (its newest checkpoint) or ``.pth``; local or ``gs://`` (a
      ``.pth`` also ``s3://``; orbax reads no checkpoint there).
    variant: expected size ('vit_b', ...); inferred from the weights if None.
    **compute_overrides: non-architecture config fields, e.g. ``dtype='bfloat16'``
      or ``attention_impl='cudnn'``; a different ``scan_layers`` restacks the
      encoder blocks' params to match.
  """
  config, params = load_config_and_params(path, variant)
  bad = sorted(set(compute_overrides) & set(SamConfig.ARCH_FIELDS))
  if bad:
    raise ValueError(f"cannot override architecture fields {bad} of a checkpoint")
  if compute_overrides:
    loaded, config = config, config.replace(**compute_overrides)
    params = convert_block_layout(params, loaded, config)
  return LoadedSam(SamModel(config), params)


def load_config_and_params(path: str, variant: str | None = None
                           ) -> tuple[SamConfig, dict]:
  """(config, float32 params) from any checkpoint path ``samjax.formats`` knows.

  The params are in the layout of the config returned with them (encoder
  blocks stacked when it scans them: a workdir trained with ``scan_layers``).
  """
  from samjax import interop
  kind = formats.checkpoint_kind(path)
  if kind == formats.TORCH_FILE:
    return interop.import_official(path, variant)
  if kind == formats.WORKDIR:
    config, params = _load_training_workdir(path)
  else:
    config, params = interop.load_model_dir(path)
  if variant is not None and not get_config(variant).same_architecture(config):
    raise ValueError(f"{path} holds {config.describe()}, not {variant}")
  return config, params


def _load_training_workdir(path: str) -> tuple[SamConfig, dict]:
  """Params of the newest checkpoint of a ``samjax train`` workdir."""
  from samjax.extras import require
  require("orbax.checkpoint", "train", "loading a samjax training workdir")
  from samjax.checkpoints.workdir import WorkdirCheckpoints
  config = formats.read_model_config(path)
  ckpt = WorkdirCheckpoints(path, async_save=False)
  try:
    params = ckpt.restore_params()
  finally:
    ckpt.close()
  return config, jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)

"""A converted model on disk: an orbax checkpoint of the params + a config JSON.

The layout is defined in ``samjax.formats`` (model directory); this module
reads and writes the tensors.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from samjax import formats
from samjax.model.configs import SamConfig


def save_model_dir(directory: str, params, config: SamConfig,
                   source: str | None = None, overwrite: bool = False) -> None:
  """Writes params (orbax) and config (JSON) into ``directory``."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and os.listdir(directory):
    if not overwrite:
      raise FileExistsError(f"{directory} exists and is not empty "
                            "(pass overwrite=True / --overwrite to replace it)")
    shutil.rmtree(directory)
  os.makedirs(directory, exist_ok=True)
  params = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32),
                                  params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, formats.MODEL_PARAMS), params)
    ckptr.wait_until_finished()
  formats.write_model_metadata(os.path.join(directory, formats.MODEL_JSON), config, source)


def load_model_dir(directory: str) -> tuple[SamConfig, dict]:
  """Reads (config, params) written by ``save_model_dir``."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if not formats.is_model_dir(directory):
    raise FileNotFoundError(f"{directory} is not a samjax model directory "
                            f"(no {formats.MODEL_JSON}); convert a .pth with "
                            "`samjax convert --from-torch`")
  config = formats.read_model_config(directory)
  from samjax.model.sam import SamModel
  target = SamModel(config).param_shapes()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(directory, formats.MODEL_PARAMS), target)
  return config, params

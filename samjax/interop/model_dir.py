"""A converted model on disk: an orbax checkpoint of the params + a config JSON.

The layout is defined in ``samjax.formats`` (model directory); this module
reads and writes the tensors.
"""

from __future__ import annotations

import os
import secrets
import shutil

import jax
import numpy as np

from samjax import formats
from samjax.model.configs import SamConfig


def save_model_dir(directory: str, params, config: SamConfig,
                   source: str | None = None, overwrite: bool = False) -> None:
  """Writes params (orbax) and config (JSON) into ``directory``.

  The model is written to a sibling temp folder and renamed into place when
  complete, so a kill leaves the old directory or the new one, never a part.
  ``overwrite`` replaces only a samjax model directory, and only after the
  new one is complete.
  """
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  exists = os.path.exists(directory) and (not os.path.isdir(directory)
                                          or bool(os.listdir(directory)))
  if exists and not overwrite:
    raise FileExistsError(f"{directory} exists and is not empty "
                          "(pass overwrite=True / --overwrite to replace it)")
  if exists and not formats.is_model_dir(directory):
    raise FileExistsError(f"{directory} is not a samjax model directory (no "
                          f"{formats.MODEL_JSON}); --overwrite only replaces those")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tag = secrets.token_hex(4)
  staging = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{tag}")
  params = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32),
                                  params)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(staging, formats.MODEL_PARAMS), params)
      ckptr.wait_until_finished()
    formats.write_model_metadata(os.path.join(staging, formats.MODEL_JSON), config, source)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  old = None
  if os.path.exists(directory):
    old = os.path.join(parent, f".{os.path.basename(directory)}.old-{tag}")
    os.replace(directory, old)
  os.replace(staging, directory)
  if old is not None:
    shutil.rmtree(old)


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

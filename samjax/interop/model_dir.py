"""A converted model on disk: an orbax checkpoint of the params + a config JSON.

The layout is defined in ``samjax.formats`` (model directory); this module
reads and writes the tensors. A model directory may be local or on
``gs://``; ``s3://`` is refused in one line (orbax cannot write checkpoints
there: ``storage.check_checkpoint_location``). The folder is written whole
(``staged_folder``): ``samjax_model.json`` is written last, so a folder
without it is never loaded as a model.
"""

from __future__ import annotations

import jax
import numpy as np

from data_pipelines import storage
from samjax import formats
from samjax.interop import staged_folder
from samjax.model.configs import SamConfig

KIND = "samjax model directory"


def _orbax(verb: str):
  """``orbax.checkpoint``, or a one-line error naming the extra that has it
  (flax requires orbax-checkpoint too, so it is rarely missing)."""
  from samjax.extras import require
  return require("orbax.checkpoint", "train", f"{verb} a {KIND}")


def save_model_dir(directory: str, params, config: SamConfig,
                   source: str | None = None, overwrite: bool = False) -> None:
  """Writes params (orbax) and config (JSON) into ``directory``.

  The model is written to a sibling staging folder and put in place when
  complete (``staged_folder``), so a kill never leaves a part of a model
  under ``directory``. ``overwrite`` replaces only a samjax model
  directory, and only after the new one is complete.
  """
  ocp = _orbax("writing")
  directory = storage.check_checkpoint_location(directory)
  staged_folder.check_target(directory, formats.MODEL_JSON, overwrite, KIND)
  params = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32),
                                  params)

  def write(staging: str) -> None:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(storage.join(staging, formats.MODEL_PARAMS), params)
      ckptr.wait_until_finished()
    # Last: the marker that the folder is a complete model.
    formats.write_model_metadata(storage.join(staging, formats.MODEL_JSON), config, source)

  staged_folder.write_staged(directory, formats.MODEL_JSON, write)


def load_model_dir(directory: str) -> tuple[SamConfig, dict]:
  """Reads (config, params) written by ``save_model_dir``."""
  ocp = _orbax("loading")
  directory = storage.check_checkpoint_location(directory)
  if not formats.is_model_dir(directory):
    raise FileNotFoundError(f"{directory} is not a samjax model directory "
                            f"(no {formats.MODEL_JSON}); convert a .pth with "
                            "`samjax convert --from-torch`")
  config = formats.read_model_config(directory)
  from samjax.model.sam import SamModel
  target = SamModel(config).param_shapes()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(storage.join(directory, formats.MODEL_PARAMS), target)
  return config, params

"""A converted model on disk: an orbax checkpoint of the params + a config JSON.

Layout of DIR:
  DIR/params/            orbax StandardCheckpointer tree (float32 params)
  DIR/samjax_model.json  {"format", "version", "config": SamConfig, "source"}
"""

from __future__ import annotations

import datetime
import json
import os
import shutil

import jax
import numpy as np

from samjax.model.configs import SamConfig

MODEL_JSON = "samjax_model.json"
FORMAT = "samjax-model"


def is_model_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MODEL_JSON))


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
    ckptr.save(os.path.join(directory, "params"), params)
    ckptr.wait_until_finished()
  meta = {"format": FORMAT, "version": 1, "config": config.to_dict(),
          "source": source,
          "created": datetime.datetime.now(datetime.UTC).isoformat()}
  with open(os.path.join(directory, MODEL_JSON), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)


def load_model_dir(directory: str) -> tuple[SamConfig, dict]:
  """Reads (config, params) written by ``save_model_dir``."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  meta_path = os.path.join(directory, MODEL_JSON)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{directory} is not a samjax model directory "
                            f"(no {MODEL_JSON}); convert a .pth with "
                            "`samjax convert --from-torch`")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}")
  config = SamConfig.from_dict(meta["config"])
  from samjax.model.sam import SamModel
  target = SamModel(config).param_shapes()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(directory, "params"), target)
  return config, params

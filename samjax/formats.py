"""Every on-disk format samjax reads or writes, defined in one place.

Three kinds of checkpoint path are accepted everywhere a model is loaded
(``load_sam``, ``samjax segment/amg --checkpoint``, ``samjax convert
--to-torch``, ``init.kind=sam``):

Model directory (``samjax convert --from-torch``)::

  DIR/samjax_model.json   {"format": "samjax-model", "version": 1,
                           "config": SamConfig fields, "source", "created"}
  DIR/params/             orbax StandardCheckpointer tree, float32, official layout

Training workdir (``samjax train --workdir W``)::

  W/config.json           resolved experiment config, seed, code version, jax, devices
  W/model_config.json     the SamConfig, same envelope as samjax_model.json
                          (workdirs written before the envelope hold the bare dict)
  W/checkpoints/<step>/   orbax: ``state`` (step, params, opt_state, rng) and
                          ``data`` (each process's grain iterator position)
  W/checkpoints_unrestorable/<step>-<time>/   corrupt steps a resume skipped
  W/metrics.jsonl         one JSON object per logged step ({"step", "split", ...}),
                          on local disk (appended)
  W/metrics/<first step>-<start ms>.jsonl   the same records on gs:// (no append
                          there): segment objects rewritten whole at each record;
                          read either layout with ``samjax.train.metrics_store.read_metrics``
  W/tensorboard/          TensorBoard event files (on a bucket: a new file every
                          ``samjax.train.event_log.ROLL_FLUSHES`` flushes)
  W/final_metrics.json    held-out metrics of the last run (initial_* before training)

Official checkpoint::

  FILE.pth                torch state_dict (read with weights_only=True, never unpickled)
  FILE.safetensors        the same tensors as safetensors (official keys; no pickle at all)
  FILE.pth.json           optional sidecar written by export: constructor arguments
                          and the SamConfig (sizes the shapes cannot tell)

Every path may be local, ``gs://`` or ``s3://`` (``data_pipelines.storage``).

This module only knows paths and metadata; the tensors are read by
``samjax.interop`` (model dirs, ``.pth``) and ``samjax.checkpoints``
(workdirs).
"""

from __future__ import annotations

import datetime
import json

from data_pipelines import atomic_io, storage
from samjax.model.configs import SamConfig

# Model directory.
MODEL_JSON = "samjax_model.json"
MODEL_PARAMS = "params"
MODEL_FORMAT = "samjax-model"
MODEL_FORMAT_VERSION = 1

# Training workdir.
RUN_CONFIG = "config.json"
WORKDIR_MODEL_CONFIG = "model_config.json"
CHECKPOINTS = "checkpoints"
UNRESTORABLE_CHECKPOINTS = "checkpoints_unrestorable"  # corrupt steps moved aside
METRICS = "metrics.jsonl"
METRICS_SEGMENTS = "metrics"  # the segment objects of metrics.jsonl on a bucket
TENSORBOARD = "tensorboard"
FINAL_METRICS = "final_metrics.json"

# Official checkpoint export.
EXPORT_FORMAT = "samjax-official-export"

WORKDIR, MODEL_DIR, TORCH_FILE = "workdir", "model_dir", "pth"


def is_model_dir(path: str) -> bool:
  return storage.isfile(storage.join(path, MODEL_JSON))


def is_workdir(path: str) -> bool:
  """A ``samjax train`` workdir that holds a model (config + checkpoints/)."""
  return (storage.isfile(storage.join(path, WORKDIR_MODEL_CONFIG))
          and storage.isdir(storage.join(path, CHECKPOINTS)))


def checkpoint_kind(path: str) -> str:
  """``WORKDIR``, ``MODEL_DIR`` or ``TORCH_FILE`` for a checkpoint path.

  Raises FileNotFoundError naming what is missing.
  """
  if storage.isdir(path):
    if is_workdir(path):
      return WORKDIR
    if is_model_dir(path):
      return MODEL_DIR
    raise FileNotFoundError(
        f"{path} is a directory but neither a samjax model directory (no {MODEL_JSON}) "
        f"nor a training workdir (no {WORKDIR_MODEL_CONFIG} + {CHECKPOINTS}/)")
  if storage.isfile(path):
    return TORCH_FILE
  raise FileNotFoundError(f"no such checkpoint: {path}")


def checkpoints_dir(workdir: str) -> str:
  return storage.join(storage.resolve(workdir), CHECKPOINTS)


def model_metadata(config: SamConfig, source: str | None = None) -> dict:
  """The JSON envelope of a model config (model dirs and workdirs alike)."""
  return {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION,
          "config": config.to_dict(), "source": source,
          "created": datetime.datetime.now(datetime.UTC).isoformat()}


def write_model_metadata(json_path: str, config: SamConfig, source: str | None = None
                         ) -> None:
  atomic_io.write_json(json_path, model_metadata(config, source), indent=2, sort_keys=True)


def parse_model_metadata(meta, where: str) -> SamConfig:
  """SamConfig from an envelope (or, for old workdirs, a bare config dict)."""
  if not isinstance(meta, dict):
    raise ValueError(f"{where}: expected a JSON object, found {type(meta).__name__}")
  if "format" not in meta:  # model_config.json of workdirs before the envelope
    return SamConfig.from_dict(meta)
  if meta["format"] != MODEL_FORMAT:
    raise ValueError(f"{where}: unknown format {meta['format']!r} (expected {MODEL_FORMAT!r})")
  if int(meta.get("version", 0)) > MODEL_FORMAT_VERSION:
    raise ValueError(f"{where}: format version {meta['version']} is newer than this "
                     f"samjax understands ({MODEL_FORMAT_VERSION}); upgrade samjax")
  return SamConfig.from_dict(meta["config"])


def read_model_config(path: str) -> SamConfig:
  """SamConfig of a model dir or a training workdir."""
  meta_path = storage.join(path, WORKDIR_MODEL_CONFIG if is_workdir(path) else MODEL_JSON)
  if not storage.isfile(meta_path):
    raise FileNotFoundError(f"{path} is not a samjax model directory or workdir "
                            f"(no {MODEL_JSON}); convert a .pth with "
                            "`samjax convert --from-torch`")
  try:
    meta = json.loads(storage.read_text(meta_path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{meta_path} is not valid JSON ({e}); the file is damaged") from e
  return parse_model_metadata(meta, meta_path)


def sidecar_path(pth_path: str) -> str:
  """Where export writes the constructor arguments next to a ``.pth``."""
  return pth_path + ".json"

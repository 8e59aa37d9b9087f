"""Official state_dict <-> samjax params, both directions through ``param_table``."""

from __future__ import annotations

import json
from collections.abc import Mapping

import jax
import numpy as np

from data_pipelines import atomic_io, storage
from samjax import formats
from samjax.formats import sidecar_path
from samjax.interop.config_from_shapes import infer_config
from samjax.interop.errors import CheckpointMismatchError
from samjax.interop.official import constructor_kwargs
from samjax.interop.param_table import (
  flatten,
  from_torch_layout,
  param_table,
  to_torch_layout,
  torch_shape,
  unflatten,
)
from samjax.interop.torch_io import load_state_dict, save_state_dict
from samjax.model.block_stacking import stack_encoder_blocks, unstack_encoder_blocks
from samjax.model.configs import SamConfig, get_config, variant_name
from samjax.model.sam import SamModel


def model_shapes(config: SamConfig) -> dict[tuple, tuple]:
  """{param path tuple: shape} of a model of ``config`` in the per-block
  layout ``param_table`` names (no memory allocated)."""
  shapes = jax.eval_shape(lambda: unstack_encoder_blocks(
      SamModel(config).init(jax.random.PRNGKey(0)), config))
  return {p: tuple(s.shape) for p, s in flatten(shapes).items()}


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: SamConfig,
                           source: str = "state_dict") -> dict:
  """Official ``{key: array}`` -> samjax params (float32) for ``config``,
  in its layout (encoder blocks stacked when ``config`` scans them).

  Raises ``CheckpointMismatchError`` listing missing keys, unexpected keys and
  shape mismatches by name; nothing is reshaped or dropped silently.
  """
  rules = param_table(config)
  jax_shapes = model_shapes(config)
  known = {r.torch_key for r in rules}
  missing = [r.torch_key for r in rules if r.torch_key not in state_dict]
  unexpected = [k for k in state_dict if k not in known]
  mismatched = []
  for r in rules:
    if r.torch_key in state_dict:
      want = torch_shape(r, jax_shapes[r.jax_path])
      got = tuple(np.shape(state_dict[r.torch_key]))
      if got != want:
        mismatched.append((r.torch_key, got, want))
  if missing or unexpected or mismatched:
    hint = ""
    try:
      found = infer_config({k: np.shape(v) for k, v in state_dict.items()})
      if not found.same_architecture(config):
        hint = f"the file holds {found.describe()}, the model is {config.describe()}"
    except ValueError:
      pass
    raise CheckpointMismatchError(source, missing, unexpected, mismatched, hint)
  flat = {r.jax_path: from_torch_layout(r, state_dict[r.torch_key]).astype(np.float32)
          for r in rules}
  return stack_encoder_blocks(unflatten(flat), config)


def state_dict_from_params(params, config: SamConfig) -> dict[str, np.ndarray]:
  """samjax params (in ``config``'s layout) -> official ``{key: array}`` (in
  official key order)."""
  rules = param_table(config)
  per_block = unstack_encoder_blocks(jax.device_get(params), config)
  flat = {p: np.asarray(v) for p, v in flatten(per_block).items()}
  wanted = {r.jax_path for r in rules}
  missing = ["/".join(r.jax_path) for r in rules if r.jax_path not in flat]
  unexpected = ["/".join(p) for p in flat if p not in wanted]
  mismatched = []
  jax_shapes = model_shapes(config)
  for r in rules:
    if r.jax_path in flat and flat[r.jax_path].shape != jax_shapes[r.jax_path]:
      mismatched.append(("/".join(r.jax_path), flat[r.jax_path].shape,
                         jax_shapes[r.jax_path]))
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError("params", missing, unexpected, mismatched)
  return {r.torch_key: to_torch_layout(r, flat[r.jax_path]) for r in rules}


def import_official(path: str, variant: str | None = None
                    ) -> tuple[SamConfig, dict]:
  """Loads an official ``.pth`` -> (config, params).

  ``variant`` ('vit_b', ...) is checked against the shapes in the file; when
  omitted the size is inferred (a sidecar JSON written by ``export_official``
  supplies what shapes cannot tell, e.g. the decoder head count).
  """
  state_dict = load_state_dict(path)
  shapes = {k: np.shape(v) for k, v in state_dict.items()}
  sidecar = None
  if storage.isfile(sidecar_path(path)):
    try:
      sidecar = SamConfig.from_dict(
          json.loads(storage.read_text(sidecar_path(path)))["samjax_config"])
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{sidecar_path(path)}: not a samjax export sidecar "
                       f"({type(e).__name__}: {e}); fix or remove it") from None
  if variant is not None:
    config = get_config(variant)
    try:
      found = infer_config(shapes, source=path)
    except ValueError:
      found = None
    if found is not None and not found.same_architecture(config):
      raise CheckpointMismatchError(
          path, hint=f"--variant {variant} was given but the file holds {found.describe()}")
  elif sidecar is not None:
    config = sidecar
  else:
    config = infer_config(shapes, source=path)
    name = variant_name(config)
    if name is not None:
      config = get_config(name)
  return config, params_from_state_dict(state_dict, config, source=path)


def export_official(params, config: SamConfig, path: str) -> dict[str, np.ndarray]:
  """Writes params as an official ``.pth`` plus ``<path>.json`` with the
  constructor arguments (needed to rebuild non-standard sizes). Returns the
  state_dict written."""
  state_dict = state_dict_from_params(params, config)
  save_state_dict(state_dict, path)
  meta = {"format": formats.EXPORT_FORMAT, "variant": variant_name(config),
          "official_constructor_kwargs": constructor_kwargs(config),
          "samjax_config": config.to_dict()}
  atomic_io.write_json(sidecar_path(path), meta, indent=2, sort_keys=True)
  return state_dict

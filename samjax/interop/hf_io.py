"""Hugging Face ``transformers`` ``SamModel`` folders and safetensors files.

A ``SamModel`` folder (what ``SamModel.from_pretrained(DIR)`` reads)::

  DIR/config.json          model_type "sam": vision_config, prompt_encoder_config,
                           mask_decoder_config (``hf_config``)
  DIR/model.safetensors    the tensors under HF's names (``hf_keys``), float32
  DIR/samjax_export.json   written by samjax only: the SamConfig and the
                           source; ``--overwrite`` replaces only folders
                           holding it, and ``--from-hf`` keeps its compute
                           settings when the architecture agrees

Folders may be local, ``gs://`` or ``s3://`` (``data_pipelines.storage``);
an export is written whole (``staged_folder``, the marker last).

Neither ``transformers`` nor ``torch`` is needed to write or read one (only
``safetensors``; torch only to read bfloat16 tensors). ``safetensors`` is
imported when used, with a clear message when it is not installed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping

import numpy as np

from data_pipelines import atomic_io, storage
from samjax import formats
from samjax.interop import staged_folder
from samjax.interop.safetensors_io import (  # noqa: F401 - re-exported
  read_safetensors,
  require_safetensors,
  safetensors_bytes,
  write_safetensors,
)
from samjax.model.configs import SamConfig, get_config, variant_name

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_MARKER = "samjax_export.json"
HF_MARKER_FORMAT = "samjax-hf-export"
HF_MODEL_TYPE = "sam"

# Fixed by the official architecture: HF exposes them as options, samjax does not.
_VISION_FIXED = {"num_channels": 3, "hidden_act": "gelu", "qkv_bias": True,
                 "use_abs_pos": True, "use_rel_pos": True}
_PROMPT_FIXED = {"num_point_embeddings": 4, "hidden_act": "gelu"}
_DECODER_FIXED = {"hidden_act": "relu", "attention_downsample_rate": 2}


# --------------------------------------------------------------------------- config


def hf_config(config: SamConfig) -> dict:
  """The ``config.json`` of a HF ``SamModel`` with the architecture of ``config``.

  Layer-norm epsilons are the official ones: 1e-6 everywhere except the mask
  decoder's two-way transformer, which uses torch's default 1e-5 (HF's own
  default there is 1e-6).
  """
  from samjax.interop.hf_keys import check_representable
  check_representable(config)
  mlp_dim = int(config.encoder_embed_dim * config.mlp_ratio)
  if config.prompt_embed_dim % 2:
    raise ValueError(f"prompt_embed_dim={config.prompt_embed_dim} is odd; SAM's "
                     "positional encoding needs an even width")
  return {
      "architectures": ["SamModel"],
      "model_type": HF_MODEL_TYPE,
      "dtype": "float32",
      "initializer_range": 0.02,
      "tie_word_embeddings": True,
      "vision_config": {
          "model_type": "sam_vision_model",
          "hidden_size": config.encoder_embed_dim,
          "num_hidden_layers": config.encoder_depth,
          "num_attention_heads": config.encoder_num_heads,
          "image_size": config.image_size,
          "patch_size": config.patch_size,
          "window_size": config.window_size,
          "global_attn_indexes": list(config.encoder_global_attn_indexes),
          "mlp_ratio": float(config.mlp_ratio),
          "mlp_dim": mlp_dim,
          "output_channels": config.prompt_embed_dim,
          "num_pos_feats": config.prompt_embed_dim // 2,
          "layer_norm_eps": 1e-6,
          "attention_dropout": 0.0,
          "initializer_range": 1e-10,
          **_VISION_FIXED,
      },
      "prompt_encoder_config": {
          "model_type": "sam_prompt_encoder",
          "hidden_size": config.prompt_embed_dim,
          "image_size": config.image_size,
          "patch_size": config.patch_size,
          "image_embedding_size": config.embedding_size,
          "mask_input_channels": config.mask_in_chans,
          "layer_norm_eps": 1e-6,
          **_PROMPT_FIXED,
      },
      "mask_decoder_config": {
          "model_type": "sam_mask_decoder",
          "hidden_size": config.prompt_embed_dim,
          "mlp_dim": config.decoder_mlp_dim,
          "num_hidden_layers": config.decoder_depth,
          "num_attention_heads": config.decoder_num_heads,
          "num_multimask_outputs": config.num_multimask_outputs,
          "iou_head_depth": config.iou_head_depth,
          "iou_head_hidden_dim": config.iou_head_hidden_dim,
          "layer_norm_eps": 1e-5,
          **_DECODER_FIXED,
      },
  }


def _square(value, name: str, where: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ValueError(f"{where}: {name}={list(value)}; samjax models are square")
    value = value[0]
  if not isinstance(value, int) or isinstance(value, bool):
    raise ValueError(f"{where}: {name}={value!r} is not an integer")
  return value


def config_from_hf(d: Mapping, where: str = HF_CONFIG) -> SamConfig:
  """SamConfig from a HF ``SamModel`` ``config.json`` dict.

  HF's defaults apply to fields the file leaves out (as transformers does).
  Raises ValueError naming the field when the file describes something
  samjax's SAM cannot represent.
  """
  vis, pe, dec = _hf_sub_configs(d, where)
  embed = _get(vis, "hidden_size", 768)
  image_size = _square(_get(vis, "image_size", 1024),
                       "vision_config.image_size", where)
  patch = _square(_get(vis, "patch_size", 16),
                  "vision_config.patch_size", where)
  mlp_dim = _vision_mlp_dim(vis, embed, where)
  prompt_dim = _get(pe, "hidden_size", 256)
  _check_matching_sizes(vis, pe, dec, prompt_dim, image_size, patch, where)
  iou_depth = _get(dec, "iou_head_depth", 3)
  if iou_depth < 2:
    raise ValueError(f"{where}: mask_decoder_config.iou_head_depth={iou_depth} < 2")
  try:
    return SamConfig(
        encoder_embed_dim=embed,
        encoder_depth=_get(vis, "num_hidden_layers", 12),
        encoder_num_heads=_get(vis, "num_attention_heads", 12),
        encoder_global_attn_indexes=tuple(_get(vis, "global_attn_indexes",
                                               (2, 5, 8, 11))),
        image_size=image_size, patch_size=patch,
        window_size=_get(vis, "window_size", 14),
        mlp_ratio=mlp_dim / embed,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=_get(pe, "mask_input_channels", 16),
        decoder_depth=_get(dec, "num_hidden_layers", 2),
        decoder_mlp_dim=_get(dec, "mlp_dim", 2048),
        decoder_num_heads=_get(dec, "num_attention_heads", 8),
        num_multimask_outputs=_get(dec, "num_multimask_outputs", 3),
        iou_head_depth=iou_depth,
        iou_head_hidden_dim=_get(dec, "iou_head_hidden_dim", 256))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: not a model samjax can build: {e}") from None


def _get(sub: Mapping, key: str, default):
  """``sub[key]``, HF's ``default`` when the field is missing or null."""
  value = sub.get(key, default)
  return default if value is None else value


def _hf_sub_configs(d: Mapping, where: str) -> tuple[Mapping, Mapping, Mapping]:
  """(vision_config, prompt_encoder_config, mask_decoder_config) of a HF SAM
  config dict (a missing one is ``{}``), after checking ``model_type`` and the
  fields samjax's SAM fixes (``_VISION_FIXED``, ``_PROMPT_FIXED``,
  ``_DECODER_FIXED``)."""
  if not isinstance(d, Mapping):
    raise ValueError(f"{where}: expected a JSON object, found {type(d).__name__}")
  model_type = d.get("model_type")
  if model_type != HF_MODEL_TYPE:
    found = f"model_type {model_type!r}" if model_type else "no model_type"
    raise ValueError(f"{where} is not a Hugging Face SAM model config ({found}; "
                     f"expected {HF_MODEL_TYPE!r}, as transformers.SamModel writes)")
  subs = {}
  for name in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
    sub = d.get(name) or {}
    if not isinstance(sub, Mapping):
      raise ValueError(f"{where}: {name} is a {type(sub).__name__}, not an object")
    subs[name] = sub
  for name, table in (("vision_config", _VISION_FIXED),
                      ("prompt_encoder_config", _PROMPT_FIXED),
                      ("mask_decoder_config", _DECODER_FIXED)):
    for key, want in table.items():
      got = subs[name].get(key, want)
      if got != want:
        raise ValueError(f"{where}: {name}.{key}={got!r}; samjax's SAM only "
                         f"supports {want!r}")
  return (subs["vision_config"], subs["prompt_encoder_config"],
          subs["mask_decoder_config"])


def _vision_mlp_dim(vis: Mapping, embed: int, where: str) -> int:
  """The encoder MLP width: ``mlp_dim``, else ``int(hidden_size * mlp_ratio)``;
  ValueError when SamConfig's ``mlp_ratio`` cannot give it back."""
  mlp_ratio = float(_get(vis, "mlp_ratio", 4.0))
  mlp_dim = vis.get("mlp_dim")
  mlp_dim = int(embed * mlp_ratio) if mlp_dim is None else mlp_dim
  if int(embed * (mlp_dim / embed)) != mlp_dim:
    raise ValueError(f"{where}: vision_config.mlp_dim={mlp_dim} cannot be written as "
                     f"int(hidden_size * mlp_ratio) with hidden_size={embed}")
  return mlp_dim


def _check_matching_sizes(vis: Mapping, pe: Mapping, dec: Mapping, prompt_dim: int,
                          image_size: int, patch: int, where: str) -> None:
  """Checks the sizes HF stores more than once (SAM derives them from
  ``prompt_encoder_config.hidden_size`` and the vision image and patch size)."""
  checks = [
      ("vision_config.output_channels", _get(vis, "output_channels", 256), prompt_dim),
      ("mask_decoder_config.hidden_size", _get(dec, "hidden_size", 256), prompt_dim),
      ("vision_config.num_pos_feats", _get(vis, "num_pos_feats", 128), prompt_dim // 2),
      ("prompt_encoder_config.image_size",
       _square(_get(pe, "image_size", 1024), "prompt_encoder_config.image_size", where),
       image_size),
      ("prompt_encoder_config.patch_size",
       _square(_get(pe, "patch_size", 16), "prompt_encoder_config.patch_size", where),
       patch),
  ]
  for name, got, want in checks:
    if got != want:
      raise ValueError(f"{where}: {name}={got} but SAM needs {want} (from "
                       "prompt_encoder_config.hidden_size and vision_config's sizes)")


# ---------------------------------------------------------------------- safetensors


def _read_hf_weights(directory: str) -> dict[str, np.ndarray]:
  single = storage.join(directory, HF_WEIGHTS)
  index = storage.join(directory, HF_WEIGHTS_INDEX)
  if storage.isfile(single):
    return read_safetensors(single)
  if storage.isfile(index):  # sharded: {"weight_map": {key: shard file}}
    weight_map = json.loads(storage.read_text(index)).get("weight_map", {})
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
      out.update(read_safetensors(storage.join(directory, shard)))
    return out
  others = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
            if storage.exists(storage.join(directory, n))]
  extra = (f" (found {', '.join(others)}: only safetensors weights are read; "
           "re-save with SamModel.save_pretrained)") if others else ""
  raise FileNotFoundError(f"{directory} has no {HF_WEIGHTS} or {HF_WEIGHTS_INDEX}{extra}")


# ------------------------------------------------------------------------ folders


def is_hf_export(directory: str) -> bool:
  """A folder ``save_hf_dir`` wrote (the only kind ``overwrite`` replaces)."""
  return storage.isfile(storage.join(directory, HF_MARKER))


def save_hf_dir(directory: str, params, config: SamConfig, source: str | None = None,
                overwrite: bool = False) -> dict[str, np.ndarray]:
  """Writes samjax params as a HF ``SamModel`` folder; returns the HF tensors.

  Written into a sibling staging folder (each file with ``atomic_io``, the
  marker last) that is put in place when complete (``staged_folder``).
  ``overwrite`` replaces only a folder this function wrote, and only after
  the new one is complete.
  """
  from samjax.interop.hf_keys import hf_from_official
  from samjax.interop.state_dict import state_dict_from_params
  directory = storage.resolve(directory)
  check_target(directory, overwrite)
  hf_cfg = hf_config(config)
  tensors = hf_from_official(state_dict_from_params(params, config), config)
  data = safetensors_bytes(tensors)

  def write(staging: str) -> None:
    atomic_io.write_bytes(storage.join(staging, HF_WEIGHTS), data)
    atomic_io.write_json(storage.join(staging, HF_CONFIG), hf_cfg, indent=2,
                         sort_keys=True, end="\n")
    atomic_io.write_json(
        storage.join(staging, HF_MARKER),
        {"format": HF_MARKER_FORMAT, "version": 1, "variant": variant_name(config),
         "samjax_config": config.to_dict(), "source": source,
         "created": datetime.datetime.now(datetime.UTC).isoformat()},
        indent=2, sort_keys=True, end="\n")

  staged_folder.write_staged(directory, HF_MARKER, write)
  return tensors


def check_target(directory: str, overwrite: bool) -> None:
  """Refuses an ``--out`` that ``save_hf_dir`` must not write (a file, a
  non-empty folder without ``overwrite``, a folder samjax did not write);
  called before a model loads, so a wrong path costs no waiting."""
  staged_folder.check_target(directory, HF_MARKER, overwrite, "Hugging Face export")


def read_hf_config(directory: str) -> SamConfig:
  """SamConfig of a HF ``SamModel`` folder (its ``config.json``)."""
  if not storage.isdir(directory):
    raise FileNotFoundError(f"no such folder: {directory}")
  path = storage.join(directory, HF_CONFIG)
  if not storage.isfile(path):
    raise FileNotFoundError(f"{directory} is not a Hugging Face model folder "
                            f"(no {HF_CONFIG})")
  try:
    d = json.loads(storage.read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e})") from None
  config = config_from_hf(d, path)
  name = variant_name(config)
  if name is not None:
    config = get_config(name)
  marker = storage.join(directory, HF_MARKER)
  if storage.isfile(marker):  # our own export: keep its compute settings
    try:
      saved = SamConfig.from_dict(json.loads(storage.read_bytes(marker))["samjax_config"])
      if saved.same_architecture(config):
        config = saved
    except (ValueError, KeyError, TypeError):
      pass  # config.json is the truth; a damaged marker only loses settings
  return config


def load_hf_dir(directory: str) -> tuple[SamConfig, dict]:
  """(config, float32 samjax params) of a HF ``SamModel`` folder."""
  from samjax.interop.hf_keys import official_from_hf
  from samjax.interop.state_dict import params_from_state_dict
  config = read_hf_config(directory)
  hf_state = _read_hf_weights(directory)
  official = official_from_hf(hf_state, config, source=directory)
  return config, params_from_state_dict(official, config, source=directory)


def export_official_safetensors(params, config: SamConfig, path: str
                                ) -> dict[str, np.ndarray]:
  """``export_official`` with a safetensors file instead of a ``.pth``: the
  official keys and layouts (``safetensors.torch.load_file`` +
  ``load_state_dict(strict=True)`` loads it) plus the same ``<path>.json``
  sidecar."""
  from samjax.interop.official import constructor_kwargs
  from samjax.interop.state_dict import state_dict_from_params
  state_dict = state_dict_from_params(params, config)
  write_safetensors(state_dict, path)
  meta = {"format": formats.EXPORT_FORMAT, "variant": variant_name(config),
          "official_constructor_kwargs": constructor_kwargs(config),
          "samjax_config": config.to_dict()}
  atomic_io.write_json(formats.sidecar_path(path), meta, indent=2, sort_keys=True)
  return state_dict

"""Official ``segment_anything`` state_dict keys <-> Hugging Face ``SamModel`` keys.

Hugging Face ``transformers.SamModel`` holds exactly the official tensors, in
the same (torch) layouts: only the names differ, so the mapping is a rename
with no reshape, split or transpose (its ``qkv`` stays one fused tensor, the
rel-pos tables keep their names). The samjax <-> official direction is
``param_table``; this module only renames, so HF export/import reuses that
one table.

  official (segment_anything)             HF (transformers SamModel)
  image_encoder.pos_embed                 vision_encoder.pos_embed
  image_encoder.patch_embed.proj.*        vision_encoder.patch_embed.projection.*
  image_encoder.blocks.{i}.norm{1,2}.*    vision_encoder.layers.{i}.layer_norm{1,2}.*
  image_encoder.blocks.{i}.attn/mlp.*     vision_encoder.layers.{i}.attn/mlp.*
  image_encoder.neck.{0,1,2,3}.*          vision_encoder.neck.{conv1,layer_norm1,
                                            conv2,layer_norm2}.*
  prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
                                          shared_image_embedding.positional_embedding
  prompt_encoder.point_embeddings.{i}.*   prompt_encoder.point_embed.{i}.*
  prompt_encoder.mask_downscaling.{0,1,3,4,6}.*
                                          prompt_encoder.mask_embed.{conv1,layer_norm1,
                                            conv2,layer_norm2,conv3}.*
  mask_decoder.transformer.layers.{i}.norm{1..4}.*
                                          ...transformer.layers.{i}.layer_norm{1..4}.*
  mask_decoder.transformer.norm_final_attn.*
                                          ...transformer.layer_norm_final_attn.*
  mask_decoder.output_upscaling.{0,1,3}.* mask_decoder.{upscale_conv1,
                                            upscale_layer_norm,upscale_conv2}.*
  mask_decoder.<mlp>.layers.{k}.*         mask_decoder.<mlp>.proj_in.* (k = 0),
   (<mlp>: output_hypernetworks_mlps.{i},   .layers.{k-1}.* (middle), .proj_out.* (last)
    iou_prediction_head)
  prompt_encoder.{not_a_point_embed,no_mask_embed}.*   (same)
  attention q/k/v/out_proj, mlp.lin{1,2}, iou_token, mask_tokens   (same)

The official positional-encoding buffer is a parameter in HF, stored once as
``shared_image_embedding.positional_embedding``; HF ties
``prompt_encoder.shared_embedding.positional_embedding`` to it (that alias is
accepted on import, and must then hold the same values). No other buffer
exists on either side (the official ``pixel_mean``/``pixel_std`` are not
persistent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from samjax.interop.errors import CheckpointMismatchError
from samjax.interop.param_table import param_table, torch_shape
from samjax.model.configs import SamConfig

# The tied alias transformers leaves out of a saved SamModel.
HF_TIED_ALIAS = "prompt_encoder.shared_embedding.positional_embedding"
HF_POSITIONAL = "shared_image_embedding.positional_embedding"

# (official regex, HF replacement) for everything but the MLP heads, tried in order.
_RENAMES = [
    (r"^image_encoder\.pos_embed$", "vision_encoder.pos_embed"),
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.blocks\.(\d+)\.norm([12])\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.", r"vision_encoder.layers.\1."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", HF_POSITIONAL),
    (r"^prompt_encoder\.point_embeddings\.(\d+)\.", r"prompt_encoder.point_embed.\1."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm([1-4])\.",
     r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.",
     "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
]
_RENAMES = [(re.compile(p), r) for p, r in _RENAMES]
_MLP_HEAD = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.layers\.(\d+)\.(weight|bias)$")


def _mlp_depth(key: str, config: SamConfig) -> int:
  return (config.iou_head_depth if ".iou_prediction_head." in key else 3)


def check_representable(config: SamConfig) -> None:
  """Raises ValueError when HF ``SamModel`` cannot hold a model of ``config``."""
  if config.iou_head_depth < 2:
    raise ValueError(
        f"iou_head_depth={config.iou_head_depth}: Hugging Face SamModel's IoU head "
        "always has an input and an output layer (depth >= 2); this model cannot be "
        "exported to it")


def hf_key(official_key: str, config: SamConfig) -> str:
  """The HF ``SamModel`` name of one official state_dict key."""
  m = _MLP_HEAD.match(official_key)
  if m:
    head, k, leaf = m.group(1), int(m.group(2)), m.group(3)
    n = _mlp_depth(official_key, config)
    if k == 0:
      return f"{head}.proj_in.{leaf}"
    if k == n - 1:
      return f"{head}.proj_out.{leaf}"
    return f"{head}.layers.{k - 1}.{leaf}"
  for pattern, repl in _RENAMES:
    new, count = pattern.subn(repl, official_key)
    if count:
      return new
  return official_key


def key_table(config: SamConfig) -> list[tuple[str, str]]:
  """[(official key, HF key)] for every tensor, in official order."""
  check_representable(config)
  pairs = [(r.torch_key, hf_key(r.torch_key, config)) for r in param_table(config)]
  hf_keys = [h for _, h in pairs]
  if len(set(hf_keys)) != len(hf_keys):  # a rename bug, never user input
    raise AssertionError("two official keys map to the same HF key")
  return pairs


def hf_from_official(state_dict: Mapping[str, np.ndarray], config: SamConfig
                     ) -> dict[str, np.ndarray]:
  """Official ``{key: array}`` (complete, as ``state_dict_from_params`` gives)
  -> HF ``SamModel`` ``{key: array}`` (same arrays, renamed)."""
  return {h: state_dict[o] for o, h in key_table(config)}


def official_from_hf(hf_state: Mapping[str, np.ndarray], config: SamConfig,
                     source: str = "Hugging Face checkpoint") -> dict[str, np.ndarray]:
  """HF ``SamModel`` ``{key: array}`` -> official ``{key: array}``.

  Checks every key and shape (named in HF's terms) and raises
  ``CheckpointMismatchError`` listing missing / unexpected keys and shape
  mismatches.
  """
  from samjax.interop.state_dict import model_shapes
  hf_state = dict(hf_state)
  # The tied alias: accepted alone or next to the key it duplicates.
  if HF_TIED_ALIAS in hf_state:
    alias = hf_state.pop(HF_TIED_ALIAS)
    if HF_POSITIONAL not in hf_state:
      hf_state[HF_POSITIONAL] = alias
    elif not np.array_equal(np.asarray(alias), np.asarray(hf_state[HF_POSITIONAL])):
      raise CheckpointMismatchError(
          source, hint=f"{HF_TIED_ALIAS} and {HF_POSITIONAL} are tied in SamModel but "
                       "hold different values")
  pairs = key_table(config)
  rules = {r.torch_key: r for r in param_table(config)}
  jax_shapes = model_shapes(config)
  known = {h for _, h in pairs}
  missing = [h for _, h in pairs if h not in hf_state]
  unexpected = [k for k in hf_state if k not in known]
  mismatched = []
  for o, h in pairs:
    if h in hf_state:
      want = torch_shape(rules[o], jax_shapes[rules[o].jax_path])
      got = tuple(np.shape(hf_state[h]))
      if got != want:
        mismatched.append((h, got, want))
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(
        source, missing, unexpected, mismatched,
        hint=f"the model described by config.json is {config.describe()}")
  return {o: hf_state[h] for o, h in pairs}

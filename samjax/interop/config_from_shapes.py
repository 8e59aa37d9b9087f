"""Reads a model config off the tensor shapes of an official state_dict.

Everything but the decoder's head count is visible in the shapes; heads come
from the export sidecar JSON when present, else the official value (8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from samjax.model.configs import VARIANTS, SamConfig

_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
_DEC_LAYER = re.compile(r"^mask_decoder\.transformer\.layers\.(\d+)\.")
_IOU_LAYER = re.compile(r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")


def _count(pattern, keys) -> int:
  idx = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
  return max(idx) + 1 if idx else 0


def infer_config(shapes: Mapping[str, tuple], decoder_num_heads: int | None = None,
                 source: str = "checkpoint") -> SamConfig:
  """Config of the SAM model whose state_dict has these ``{key: shape}``."""
  def need(key):
    if key not in shapes:
      raise ValueError(f"{source}: cannot infer the model size, key {key!r} is "
                       "missing (is this a SAM image-encoder/decoder state_dict?)")
    return tuple(shapes[key])

  embed, _, patch, _ = need("image_encoder.patch_embed.proj.weight")
  grid = need("image_encoder.pos_embed")[1]
  depth = _count(_BLOCK, shapes)
  if depth == 0:
    raise ValueError(f"{source}: no image_encoder.blocks.* keys")
  head_dim = need("image_encoder.blocks.0.attn.rel_pos_h")[1]
  global_idx, window = [], None
  for i in range(depth):
    n = need(f"image_encoder.blocks.{i}.attn.rel_pos_h")[0]
    if n == 2 * grid - 1:
      global_idx.append(i)
    else:
      window = (n + 1) // 2
  mlp_dim = need("image_encoder.blocks.0.mlp.lin1.weight")[0]
  prompt_dim = need("prompt_encoder.no_mask_embed.weight")[1]
  heads = decoder_num_heads or 8  # the official value
  cfg = SamConfig(
      encoder_embed_dim=embed, encoder_depth=depth,
      encoder_num_heads=embed // head_dim,
      encoder_global_attn_indexes=tuple(global_idx),
      image_size=grid * patch, patch_size=patch,
      window_size=window if window is not None else VARIANTS["vit_b"].window_size,
      mlp_ratio=mlp_dim / embed,
      prompt_embed_dim=prompt_dim,
      mask_in_chans=need("prompt_encoder.mask_downscaling.3.weight")[0],
      decoder_depth=_count(_DEC_LAYER, shapes),
      decoder_mlp_dim=need("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
      decoder_num_heads=heads,
      num_multimask_outputs=need("mask_decoder.mask_tokens.weight")[0] - 1,
      iou_head_depth=_count(_IOU_LAYER, shapes),
      iou_head_hidden_dim=need("mask_decoder.iou_prediction_head.layers.0.weight")[0])
  if decoder_num_heads is None:
    # Head count is invisible in the shapes: take it from a known variant
    # that matches everything else.
    for known in VARIANTS.values():
      if known.same_architecture(cfg.replace(decoder_num_heads=known.decoder_num_heads)):
        return cfg.replace(decoder_num_heads=known.decoder_num_heads)
  return cfg


"""THE table mapping every samjax parameter to its official state_dict key.

Import (``.pth`` -> params) and export (params -> ``.pth``) both read this
table, so the two directions cannot drift apart; ``tests/interop`` round-trips
every tensor of the official state_dict through it.

Each rule is (jax path, torch key, layout kind):
  identity        same array (embeddings, rel-pos tables, pos_embed, LN)
  linear          torch [out, in]          <-> jax [in, out]
  conv            torch [out, in, kh, kw]  <-> jax [kh, kw, in, out]
  conv_transpose  torch [in, out, kh, kw]  <-> jax [kh, kw, in, out]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from samjax.model.configs import SamConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ParamRule:
  jax_path: Path
  torch_key: str
  kind: str  # identity | linear | conv | conv_transpose


_TO_TORCH = {
    "identity": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),
    "conv_transpose": lambda a: a.transpose(2, 3, 0, 1),
}
_FROM_TORCH = {
    "identity": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),
    "conv_transpose": lambda a: a.transpose(2, 3, 0, 1),
}


def to_torch_layout(rule: ParamRule, array: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(_TO_TORCH[rule.kind](np.asarray(array)))


def from_torch_layout(rule: ParamRule, array: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(_FROM_TORCH[rule.kind](np.asarray(array)))


def torch_shape(rule: ParamRule, jax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The official tensor shape for a samjax param of ``jax_shape``."""
  return tuple(_TO_TORCH[rule.kind](np.empty(jax_shape, np.bool_)).shape)


class _Builder:
  def __init__(self):
    self.rules: list[ParamRule] = []

  def add(self, jax_path: str, torch_key: str, kind: str = "identity"):
    self.rules.append(ParamRule(tuple(jax_path.split("/")), torch_key, kind))

  def linear(self, j: str, t: str, bias: bool = True):
    self.add(f"{j}/kernel", f"{t}.weight", "linear")
    if bias:
      self.add(f"{j}/bias", f"{t}.bias")

  def conv(self, j: str, t: str, bias: bool = True, kind: str = "conv"):
    self.add(f"{j}/kernel", f"{t}.weight", kind)
    if bias:
      self.add(f"{j}/bias", f"{t}.bias")

  def norm(self, j: str, t: str):
    self.add(f"{j}/scale", f"{t}.weight")
    self.add(f"{j}/bias", f"{t}.bias")

  def embed(self, j: str, t: str):
    self.add(f"{j}/embedding", f"{t}.weight")


def _image_encoder(b: _Builder, cfg: SamConfig):
  j, t = "image_encoder", "image_encoder"
  # Official order: a module's own tensors first, then its submodules'.
  b.add(f"{j}/pos_embed", f"{t}.pos_embed")
  b.conv(f"{j}/patch_embed/proj", f"{t}.patch_embed.proj")
  for i in range(cfg.encoder_depth):
    jb, tb = f"{j}/blocks_{i}", f"{t}.blocks.{i}"
    b.norm(f"{jb}/norm1", f"{tb}.norm1")
    b.add(f"{jb}/attn/rel_pos_h", f"{tb}.attn.rel_pos_h")
    b.add(f"{jb}/attn/rel_pos_w", f"{tb}.attn.rel_pos_w")
    b.linear(f"{jb}/attn/qkv", f"{tb}.attn.qkv")
    b.linear(f"{jb}/attn/proj", f"{tb}.attn.proj")
    b.norm(f"{jb}/norm2", f"{tb}.norm2")
    b.linear(f"{jb}/mlp/lin1", f"{tb}.mlp.lin1")
    b.linear(f"{jb}/mlp/lin2", f"{tb}.mlp.lin2")
  b.conv(f"{j}/neck_0", f"{t}.neck.0", bias=False)
  b.norm(f"{j}/neck_1", f"{t}.neck.1")
  b.conv(f"{j}/neck_2", f"{t}.neck.2", bias=False)
  b.norm(f"{j}/neck_3", f"{t}.neck.3")


def _prompt_encoder(b: _Builder, cfg: SamConfig):
  j, t = "prompt_encoder", "prompt_encoder"
  b.add(f"{j}/pe_layer/positional_encoding_gaussian_matrix",
        f"{t}.pe_layer.positional_encoding_gaussian_matrix")
  for i in range(4):
    b.embed(f"{j}/point_embeddings_{i}", f"{t}.point_embeddings.{i}")
  b.embed(f"{j}/not_a_point_embed", f"{t}.not_a_point_embed")
  b.conv(f"{j}/mask_downscaling_0", f"{t}.mask_downscaling.0")
  b.norm(f"{j}/mask_downscaling_1", f"{t}.mask_downscaling.1")
  b.conv(f"{j}/mask_downscaling_3", f"{t}.mask_downscaling.3")
  b.norm(f"{j}/mask_downscaling_4", f"{t}.mask_downscaling.4")
  b.conv(f"{j}/mask_downscaling_6", f"{t}.mask_downscaling.6")
  b.embed(f"{j}/no_mask_embed", f"{t}.no_mask_embed")


def _attention(b: _Builder, j: str, t: str):
  for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
    b.linear(f"{j}/{proj}", f"{t}.{proj}")


def _mask_decoder(b: _Builder, cfg: SamConfig):
  j, t = "mask_decoder", "mask_decoder"
  jt, tt = f"{j}/transformer", f"{t}.transformer"
  for i in range(cfg.decoder_depth):
    jl, tl = f"{jt}/layers_{i}", f"{tt}.layers.{i}"
    _attention(b, f"{jl}/self_attn", f"{tl}.self_attn")
    b.norm(f"{jl}/norm1", f"{tl}.norm1")
    _attention(b, f"{jl}/cross_attn_token_to_image", f"{tl}.cross_attn_token_to_image")
    b.norm(f"{jl}/norm2", f"{tl}.norm2")
    b.linear(f"{jl}/mlp/lin1", f"{tl}.mlp.lin1")
    b.linear(f"{jl}/mlp/lin2", f"{tl}.mlp.lin2")
    b.norm(f"{jl}/norm3", f"{tl}.norm3")
    b.norm(f"{jl}/norm4", f"{tl}.norm4")
    _attention(b, f"{jl}/cross_attn_image_to_token", f"{tl}.cross_attn_image_to_token")
  _attention(b, f"{jt}/final_attn_token_to_image", f"{tt}.final_attn_token_to_image")
  b.norm(f"{jt}/norm_final_attn", f"{tt}.norm_final_attn")
  b.embed(f"{j}/iou_token", f"{t}.iou_token")
  b.embed(f"{j}/mask_tokens", f"{t}.mask_tokens")
  b.conv(f"{j}/output_upscaling_0", f"{t}.output_upscaling.0", kind="conv_transpose")
  b.norm(f"{j}/output_upscaling_1", f"{t}.output_upscaling.1")
  b.conv(f"{j}/output_upscaling_3", f"{t}.output_upscaling.3", kind="conv_transpose")
  for i in range(cfg.num_mask_tokens):
    for k in range(3):
      b.linear(f"{j}/output_hypernetworks_mlps_{i}/layers_{k}",
               f"{t}.output_hypernetworks_mlps.{i}.layers.{k}")
  for k in range(cfg.iou_head_depth):
    b.linear(f"{j}/iou_prediction_head/layers_{k}",
             f"{t}.iou_prediction_head.layers.{k}")


def param_table(config: SamConfig) -> list[ParamRule]:
  """Every parameter of a model of ``config``, in official state_dict order."""
  b = _Builder()
  _image_encoder(b, config)
  _prompt_encoder(b, config)
  _mask_decoder(b, config)
  return b.rules


def flatten(params) -> dict[Path, np.ndarray]:
  """Nested dict -> {path tuple: leaf}."""
  out: dict[Path, np.ndarray] = {}

  def walk(node, prefix):
    if isinstance(node, dict) or hasattr(node, "items"):
      for k, v in node.items():
        walk(v, prefix + (str(k),))
    else:
      out[prefix] = node
  walk(params, ())
  return out


def unflatten(flat: dict[Path, np.ndarray]) -> dict:
  out: dict = {}
  for path, leaf in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = leaf
  return out

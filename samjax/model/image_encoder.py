"""ViTDet image encoder of SAM.

Mirrors ``segment_anything/modeling/image_encoder.py`` (``ImageEncoderViT``,
``Block``, ``Attention``, ``PatchEmbed``, ``window_partition``,
``get_rel_pos``, ``add_decomposed_rel_pos``). Unrolled, parameter names
follow the official state_dict (``blocks_3/attn/qkv`` <-> ``blocks.3.attn.qkv``).

Shapes (ViT-B at 1024): input [B, 1024, 1024, 3] normalised and padded,
patch tokens [B, 64, 64, 768], windowed blocks attend within 14x14 windows
(grid zero-padded 64 -> 70), global blocks over all 4096 tokens; the neck
returns [B, 64, 64, 256]. Channels-last throughout.

Block loop (``SamConfig.scan_layers``, ``SamConfig.remat_policy``): the
blocks either run unrolled (one HLO copy per block, params ``blocks_i``) or
under ``nn.scan`` over groups of ``encoder_scan_period`` blocks (ViT-B: 4
groups of 2 windowed + 1 global), with the windowed run of each group
scanned again, so the compiled graph holds one windowed and one global block
at any depth. The scanned params are stored stacked, one subtree per run of
same-kind blocks (windowed and global rel-pos tables differ in length):
``scanned_blocks/run_{k}``, laid out in ``samjax.model.block_stacking``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.logical_axes import constrain, param_init
from samjax.model.attention import rel_pos_attention
from samjax.model.block_stacking import SCANNED, block_runs, uses_stacked_blocks
from samjax.model.configs import SamConfig
from samjax.model.layers import Conv, Dense, LayerNorm, MLPBlock, drop_path, to_dtype, zeros


def rel_pos_index(q_size: int, k_size: int) -> np.ndarray:
  """Index table of ``get_rel_pos``: [q_size, k_size] -> row of the rel-pos table.

  The official code scales coordinates when q_size != k_size; inside SAM the
  two are always equal, but the general formula is kept.
  """
  q = np.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
  k = np.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
  return ((q - k) + (k_size - 1) * max(q_size / k_size, 1.0)).astype(np.int32)


def window_partition(x, window: int, fill=None):
  """[B, H, W, C] -> ([B * nW, window, window, C], (Hp, Wp)).

  H, W are padded at the bottom/right up to multiples of ``window`` with
  zeros (official), or with the vector ``fill`` [C] when given.
  """
  b, h, w, c = x.shape
  pad_h, pad_w = (-h) % window, (-w) % window
  if fill is None:
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  else:
    if pad_h:
      x = jnp.concatenate([x, jnp.broadcast_to(fill, (b, pad_h, w, c))], axis=1)
    if pad_w:
      x = jnp.concatenate([x, jnp.broadcast_to(fill, (b, h + pad_h, pad_w, c))], axis=2)
  hp, wp = h + pad_h, w + pad_w
  x = x.reshape(b, hp // window, window, wp // window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
  return x, (hp, wp)


def window_unpartition(x, window: int, padded_hw, hw):
  """Inverse of ``window_partition``: drops the padding again."""
  hp, wp = padded_hw
  h, w = hw
  b = x.shape[0] // ((hp // window) * (wp // window))
  x = x.reshape(b, hp // window, wp // window, window, window, -1)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
  return x[:, :h, :w, :]


class Attention(nn.Module):
  """Multi-head self-attention with decomposed relative positions.

  [B, H, W, C] -> [B, H, W, C]. ``rel_pos_h``/``rel_pos_w`` are
  [2 * input_size - 1, head_dim] tables (official ``Attention``).

  With ``window > 0`` the input is the whole token grid and attention runs
  within window x window windows (the official ``Block`` partitions before
  ``Attention`` and unpartitions after). Computed the same way, but cheaper:
  the official pads the normalised grid with zero tokens before ``qkv``, so a
  padded token's q, k and v are exactly ``qkv``'s bias; here ``qkv`` runs on
  the real tokens only and the padding is filled with that bias, and ``proj``
  runs after the padding is cropped (it is per token). At 64 -> 70 tokens a
  side that skips 16 % of both matmuls.
  """
  dim: int
  num_heads: int
  input_size: tuple
  window: int = 0
  dtype: jnp.dtype = jnp.float32
  impl: str = "auto"
  query_chunk: int = 256

  @nn.compact
  def __call__(self, x):
    h, w = x.shape[1:3]
    qkv_dense = Dense(3 * self.dim, ("embed", "qkv"), dtype=self.dtype, name="qkv")
    qkv = qkv_dense(x)  # [B, H, W, 3C]
    if self.window:
      bias = nn.unbox(qkv_dense.variables["params"]["bias"]).astype(qkv.dtype)
      qkv, padded = window_partition(qkv, self.window, fill=bias)  # [B*nW, win, win, 3C]
    out = self._attend(qkv)
    if self.window:
      out = window_unpartition(out, self.window, padded, (h, w))
    return Dense(self.dim, ("heads", "embed"), dtype=self.dtype, name="proj")(out)

  def _attend(self, qkv):
    """[B', h, w, 3C] projected tokens -> [B', h, w, C] attention output (before proj)."""
    b, h, w, _ = qkv.shape
    n = self.num_heads
    d = self.dim // n
    qkv = qkv.reshape(b, h * w, 3, n, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B', T, N, D]

    rel_pos_h = self.param("rel_pos_h", param_init(zeros, ("rel_pos", "head_dim")),
                           (2 * self.input_size[0] - 1, d), jnp.float32)
    rel_pos_w = self.param("rel_pos_w", param_init(zeros, ("rel_pos", "head_dim")),
                           (2 * self.input_size[1] - 1, d), jnp.float32)
    if rel_pos_h.shape[0] != 2 * h - 1 or rel_pos_w.shape[0] != 2 * w - 1:
      raise ValueError(
          f"relative-position table of length {rel_pos_h.shape[0]} does not fit a "
          f"{h}x{w} input; interpolate the checkpoint to this image size first")
    r_h = rel_pos_h[rel_pos_index(h, h)]  # [h, kh, D]
    r_w = rel_pos_w[rel_pos_index(w, w)]  # [w, kw, D]
    # Rel-pos math in float32 with the *unscaled* q, as the official code.
    q32 = q.astype(jnp.float32).reshape(b, h, w, n, d)
    rel_h = jnp.einsum("bhwnc,hkc->bnhwk", q32, r_h).reshape(b, n, h * w, h)
    rel_w = jnp.einsum("bhwnc,wkc->bnhwk", q32, r_w).reshape(b, n, h * w, w)

    out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=d ** -0.5,
                            impl=self.impl, query_chunk=self.query_chunk)
    return out.reshape(b, h, w, self.dim)


class Block(nn.Module):
  """Pre-norm transformer block with windowed or global attention.

  [B, h, w, C] -> [B, h, w, C]. ``key`` (this block's dropout key, with
  ``keep``, its float32 keep probability) turns drop path on; the attention
  and MLP branches draw independent per-sample masks from it.
  """
  dim: int
  num_heads: int
  mlp_ratio: float
  window_size: int  # 0 = global attention
  input_size: tuple
  dtype: jnp.dtype = jnp.float32
  impl: str = "auto"
  query_chunk: int = 256

  @nn.compact
  def __call__(self, x, keep=None, key=None):
    attn_key, mlp_key = (None, None) if key is None else jax.random.split(key)
    shortcut = x
    x = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm1")(x)
    window = self.window_size
    attn_size = (window, window) if window > 0 else self.input_size
    x = Attention(self.dim, self.num_heads, attn_size, window=window, dtype=self.dtype,
                  impl=self.impl, query_chunk=self.query_chunk, name="attn")(x)
    x = shortcut + drop_path(x, keep, attn_key)
    y = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm2")(x)
    y = MLPBlock(int(self.dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(y)
    x = x + drop_path(y, keep, mlp_key)
    return constrain(x, ("activation_batch", None, None, "activation_embed"))


class _ScanStep(Block):
  """A ``Block`` as an ``nn.scan`` body: (carry, no per-step output)."""

  def __call__(self, x, keep=None, key=None):
    return super().__call__(x, keep, key), None


class ImageEncoderViT(nn.Module):
  """[B, S, S, 3] normalised image -> [B, S/16, S/16, prompt_embed_dim]."""
  config: SamConfig

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    cfg = self.config
    dtype = to_dtype(cfg.dtype)
    grid = cfg.embedding_size
    if x.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(f"image encoder expects [B, {cfg.image_size}, "
                       f"{cfg.image_size}, 3], got {x.shape}")
    x = constrain(x, ("activation_batch", None, None, None))
    x = _PatchEmbed(cfg.encoder_embed_dim, cfg.patch_size, dtype, name="patch_embed")(x)
    pos_embed = self.param("pos_embed", param_init(zeros, (None, None, None, "embed")),
                           (1, grid, grid, cfg.encoder_embed_dim), jnp.float32)
    x = x + pos_embed.astype(dtype)

    drop = self._drop_path_inputs(deterministic)
    if uses_stacked_blocks(cfg):
      x = self._scanned_blocks(x, drop)
    else:
      x = self._unrolled_blocks(x, drop)

    out = cfg.prompt_embed_dim
    x = Conv(out, 1, use_bias=False, dtype=dtype, name="neck_0")(x)
    x = LayerNorm(eps=1e-6, dtype=dtype, name="neck_1")(x)
    x = Conv(out, 3, padding=1, use_bias=False, dtype=dtype,
             kernel_axes=(None, None, "embed", None), name="neck_2")(x)
    x = LayerNorm(eps=1e-6, dtype=jnp.float32, name="neck_3")(x)
    return x

  def _drop_path_inputs(self, deterministic: bool):
    """(keep [depth] float32, keys [depth, ...]), or None when drop path is off.

    Block i keeps a sample with probability 1 - linspace(0, drop_path_rate,
    depth)[i] and draws its masks from ``split(make_rng("dropout"),
    depth)[i]``. Both loops take block i's pair from here, so the same rngs
    give the same masks scanned or unrolled.
    """
    cfg = self.config
    if deterministic or cfg.drop_path_rate == 0.0:
      return None
    depth = cfg.encoder_depth
    keep = np.float32(1.0) - np.linspace(0.0, cfg.drop_path_rate, depth).astype(np.float32)
    return keep, jax.random.split(self.make_rng("dropout"), depth)

  def _unrolled_blocks(self, x, drop):
    """[B, h, w, C] -> [B, h, w, C] through ``blocks_0..blocks_{depth-1}``."""
    cfg = self.config
    block_cls = _remat(Block, cfg.remat_policy, prevent_cse=True)
    for i, window in enumerate(cfg.encoder_block_windows):
      block = block_cls(window_size=window, name=f"blocks_{i}", **_block_kwargs(cfg))
      x = block(x, *_select(drop, i))
    return x

  def _scanned_blocks(self, x, drop):
    """[B, h, w, C] -> [B, h, w, C]: ``nn.scan`` of ``_ScanGroup`` over the G groups.

    Reads the stacked params under ``scanned_blocks`` (``block_stacking``)
    as they are: the scan slices group g's params, keep probabilities and
    keys (regrouped [G, p, ...], block g * p + j at [g, j]).
    """
    cfg = self.config
    groups = cfg.encoder_depth // cfg.encoder_scan_period
    if drop is not None:
      drop = jax.tree.map(lambda a: a.reshape((groups, -1) + a.shape[1:]), drop)
    x, _ = _stacked_scan(_ScanGroup, groups)(cfg, name=SCANNED)(x, drop)
    return x


class _ScanGroup(nn.Module):
  """One group of ``encoder_scan_period`` blocks, the body of the scan over groups.

  Each run of same-kind blocks (``block_stacking.block_runs``) is one child
  named ``run_{k}``: a single block, or an inner ``nn.scan`` over the run's
  blocks. So the traced graph holds one windowed and one global block
  whatever the depth. ``drop``: (keep [p], keys [p, ...]) or None.
  """
  config: SamConfig

  @nn.compact
  def __call__(self, x, drop):
    cfg = self.config
    # prevent_cse=False is safe under scan: the forward and the backward
    # recomputation live in different loops, so XLA cannot merge them.
    for run in block_runs(cfg):
      kwargs = dict(window_size=run.window, name=run.name, **_block_kwargs(cfg))
      if run.length == 1:
        block = _remat(Block, cfg.remat_policy, prevent_cse=False)(**kwargs)
        x = block(x, *_select(drop, run.start))
      else:
        step = _remat(_ScanStep, cfg.remat_policy, prevent_cse=False)
        run_slots = slice(run.start, run.start + run.length)
        x, _ = _stacked_scan(step, run.length)(**kwargs)(x, *_select(drop, run_slots))
    return x, None


def _block_kwargs(cfg: SamConfig) -> dict:
  """``Block`` fields shared by every encoder block (all but ``window_size``)."""
  grid = cfg.embedding_size
  return dict(dim=cfg.encoder_embed_dim, num_heads=cfg.encoder_num_heads,
              mlp_ratio=cfg.mlp_ratio, input_size=(grid, grid),
              dtype=to_dtype(cfg.dtype), impl=cfg.attention_impl,
              query_chunk=cfg.attention_query_chunk)


def _select(drop, index):
  """(keep[index], keys[index]) of a (keep, keys) pair; (None, None) when drop path is off."""
  if drop is None:
    return None, None
  keep, keys = drop
  return keep[index], keys[index]


def _remat(block_cls, policy: str, prevent_cse: bool):
  """``block_cls`` under ``nn.remat`` with the ``remat_policy`` named ``policy``."""
  if policy == "none":
    return block_cls
  return nn.remat(block_cls, policy=checkpoint_policy(policy), prevent_cse=prevent_cse)


def _stacked_scan(module_cls, length: int):
  """``nn.scan`` of ``module_cls`` over ``length`` steps; its params are
  created and read stacked on a new leading axis."""
  return nn.scan(module_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=0, length=length,
                 # The stacked dim has no logical name: replicated whatever the
                 # rules, while the per-block dims keep theirs.
                 metadata_params={nn.PARTITION_NAME: None})


def checkpoint_policy(name: str):
  """``jax.checkpoint`` policy of a ``SamConfig.remat_policy`` value ("none" excluded).

  "block" saves nothing (the block's input is the only residual);
  "dots_saveable" keeps weight-matmul outputs, not batched attention einsums;
  "offload" keeps the same matmul outputs in pinned host memory (TPU/GPU).
  """
  if name == "block":
    return None
  if name == "dots_saveable":
    return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  if name == "offload":
    return jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")
  raise ValueError(f"remat_policy={name!r} has no checkpoint policy; expected "
                   "block, dots_saveable or offload")


class _PatchEmbed(nn.Module):
  """16x16 stride-16 conv: [B, S, S, 3] -> [B, S/16, S/16, C] (``patch_embed.proj``)."""
  dim: int
  patch: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    return Conv(self.dim, self.patch, stride=self.patch, dtype=self.dtype,
                name="proj")(x)

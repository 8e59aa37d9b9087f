"""ViTDet image encoder of SAM.

Mirrors ``segment_anything/modeling/image_encoder.py`` (``ImageEncoderViT``,
``Block``, ``Attention``, ``PatchEmbed``, ``window_partition``,
``get_rel_pos``, ``add_decomposed_rel_pos``). Parameter names follow the
official state_dict (``blocks_3/attn/qkv`` <-> ``blocks.3.attn.qkv``).

Shapes (ViT-B at 1024): input [B, 1024, 1024, 3] normalised and padded,
patch tokens [B, 64, 64, 768], windowed blocks attend within 14x14 windows
(grid zero-padded 64 -> 70), global blocks over all 4096 tokens; the neck
returns [B, 64, 64, 256]. Channels-last throughout.

Block loop (``SamConfig.scan_layers``, ``SamConfig.remat_policy``): the
blocks either run unrolled (one HLO copy per block) or under ``lax.scan``
over groups of ``encoder_scan_period`` blocks (ViT-B: 4 groups of 2 windowed
+ 1 global), with the windowed run of each group scanned again, so the
compiled graph holds one windowed and one global block at any depth.
Windowed and global blocks have rel-pos tables of different lengths, so only
blocks of the same kind are stacked. The param tree is the unrolled one in
both cases; the scan stacks ``blocks_i`` inside the forward pass only.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.logical_axes import constrain, param_init
from samjax.model.attention import rel_pos_attention
from samjax.model.configs import SamConfig
from samjax.model.layers import Conv, Dense, DropPath, LayerNorm, MLPBlock, to_dtype, zeros


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
  """Pre-norm transformer block with windowed or global attention."""
  dim: int
  num_heads: int
  mlp_ratio: float
  window_size: int  # 0 = global attention
  input_size: tuple
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32
  impl: str = "auto"
  query_chunk: int = 256

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    shortcut = x
    x = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm1")(x)
    window = self.window_size
    attn_size = (window, window) if window > 0 else self.input_size
    x = Attention(self.dim, self.num_heads, attn_size, window=window, dtype=self.dtype,
                  impl=self.impl, query_chunk=self.query_chunk, name="attn")(x)
    drop = DropPath(self.drop_path)
    x = shortcut + drop(x, deterministic)
    y = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm2")(x)
    y = MLPBlock(int(self.dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(y)
    x = x + drop(y, deterministic)
    return constrain(x, ("batch", None, None, "embed"))


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
    x = constrain(x, ("batch", None, None, None))
    x = _PatchEmbed(cfg.encoder_embed_dim, cfg.patch_size, dtype, name="patch_embed")(x)
    pos_embed = self.param("pos_embed", param_init(zeros, (None, None, None, "embed")),
                           (1, grid, grid, cfg.encoder_embed_dim), jnp.float32)
    x = x + pos_embed.astype(dtype)

    if self._uses_scan():
      x = self._scanned_blocks(x, deterministic)
    else:
      x = self._unrolled_blocks(x, deterministic)

    out = cfg.prompt_embed_dim
    x = Conv(out, 1, use_bias=False, dtype=dtype, name="neck_0")(x)
    x = LayerNorm(eps=1e-6, dtype=dtype, name="neck_1")(x)
    x = Conv(out, 3, padding=1, use_bias=False, dtype=dtype,
             kernel_axes=(None, None, "embed", None), name="neck_2")(x)
    x = LayerNorm(eps=1e-6, dtype=jnp.float32, name="neck_3")(x)
    return x

  def _uses_scan(self) -> bool:
    """Whether this call runs the blocks under ``lax.scan``.

    Init always unrolls, so params are created as ``blocks_0..blocks_{d-1}``
    exactly as without scan; layouts with no repeating period (custom sizes,
    e.g. depth 5 with global blocks [1, 3]) also fall back to the unrolled
    loop.
    """
    cfg = self.config
    return (cfg.scan_layers and cfg.encoder_scan_period is not None
            and not self.is_initializing())

  def _block_kwargs(self) -> dict:
    cfg = self.config
    grid = cfg.embedding_size
    return dict(dim=cfg.encoder_embed_dim, num_heads=cfg.encoder_num_heads,
                mlp_ratio=cfg.mlp_ratio, input_size=(grid, grid),
                dtype=to_dtype(cfg.dtype), impl=cfg.attention_impl,
                query_chunk=cfg.attention_query_chunk)

  def _unrolled_blocks(self, x, deterministic: bool):
    """[B, h, w, C] -> [B, h, w, C] through ``blocks_0..blocks_{depth-1}``."""
    cfg = self.config
    block_cls = Block
    policy = cfg.encoder_remat_policy
    if policy != "none":
      block_cls = nn.remat(Block, static_argnums=(2,), policy=checkpoint_policy(policy))
    rates = np.linspace(0.0, cfg.drop_path_rate, cfg.encoder_depth)
    for i, window in enumerate(cfg.encoder_block_windows):
      x = block_cls(window_size=window, drop_path=float(rates[i]),
                    name=f"blocks_{i}", **self._block_kwargs())(x, deterministic)
    return x

  def _scanned_blocks(self, x, deterministic: bool):
    """[B, h, w, C] -> [B, h, w, C]: ``lax.scan`` over groups of blocks.

    With period p and G = depth / p groups, block g * p + j is the j-th block
    of group g. Inside a group, consecutive blocks of the same kind form a
    run (ViT-B: [windowed x 2, global], ViT-H: [windowed x 7, global]); a run
    of length L > 1 is itself a ``lax.scan`` over L blocks, so the compiled
    body holds one windowed and one global block whatever the depth. A run
    starting at position j stacks the params of blocks g * p + j + l to
    leaves [G, L, ...] ([G, ...] when L == 1); the bodies call
    ``Block.apply`` on those plain arrays. Gradients flow back through the
    stacks to the unrolled ``blocks_i`` leaves, so callers see the same
    param and gradient trees as unrolled. With ``deterministic=True`` this is
    the unrolled computation exactly.

    Drop path: block i's rate (``linspace(0, drop_path_rate, depth)[i]``) is
    a scanned input, and its ``dropout`` key is
    ``split(make_rng("dropout"), depth)[i]``, with the encoder's own dropout
    stream, so the same rngs give the same masks run to run (they are not the
    masks of the unrolled path, which folds each block's name into the key).
    """
    cfg = self.config
    depth, period = cfg.encoder_depth, cfg.encoder_scan_period
    groups = depth // period
    windows = cfg.encoder_block_windows[:period]
    runs = []  # (first position in the group, length, window)
    for j, window in enumerate(windows):
      if runs and runs[-1][2] == window:
        runs[-1] = (runs[-1][0], runs[-1][1] + 1, window)
      else:
        runs.append((j, 1, window))

    params = nn.unbox(self.variables["params"])
    stacked = []
    for j0, length, _ in runs:
      # One stack per leaf (g-major), reshaped to [G, L, ...]: a single
      # concatenate forward and one slice per block backward.
      names = [f"blocks_{g * period + j0 + l}" for g in range(groups) for l in range(length)]
      lead = (groups,) if length == 1 else (groups, length)
      stacked.append(jax.tree.map(
          lambda *leaves, lead=lead: jnp.stack(leaves).reshape(lead + leaves[0].shape),
          *[params[n] for n in names]))

    use_drop = not deterministic and cfg.drop_path_rate > 0.0
    if use_drop:
      rates = jnp.asarray(np.linspace(0.0, cfg.drop_path_rate, depth),
                          jnp.float32).reshape(groups, period)
      keys = jax.random.split(self.make_rng("dropout"), depth)
      keys = keys.reshape((groups, period) + keys.shape[1:])
    else:
      rates = keys = None

    policy = cfg.encoder_remat_policy
    kwargs = self._block_kwargs()

    def block_fn(window):
      def apply_block(p, h, rate, key):
        # parent=None: a standalone module on plain arrays, not a child of
        # this encoder (whose scope cannot be used inside lax.scan).
        block = Block(window_size=window, drop_path=rate if use_drop else 0.0,
                      parent=None, **kwargs)
        return block.apply({"params": p}, h, deterministic,
                           rngs={"dropout": key} if use_drop else None)
      if policy == "none":
        return apply_block
      # prevent_cse=False is safe under scan: the forward and the backward
      # recomputation live in different loops, so XLA cannot merge them.
      return jax.checkpoint(apply_block, policy=checkpoint_policy(policy),
                            prevent_cse=False)

    def run_fn(length, window):
      fn = block_fn(window)
      if length == 1:
        return fn

      def apply_run(p, h, rate, key):  # leaves [L, ...], rate [L], key [L, 2]
        def step(h, xs):
          p_l, rate_l, key_l = xs
          return fn(p_l, h, rate_l, key_l), None
        h, _ = jax.lax.scan(step, h, (p, rate, key))
        return h
      return apply_run
    fns = [run_fn(length, window) for _, length, window in runs]

    def group(h, xs):
      ps, r, k = xs  # one group: run params, rates [p], keys [p, 2]
      for (j0, length, _), fn, p in zip(runs, fns, ps):
        sl = j0 if length == 1 else slice(j0, j0 + length)
        h = fn(p, h, None if r is None else r[sl], None if k is None else k[sl])
      return h, None
    x, _ = jax.lax.scan(group, x, (tuple(stacked), rates, keys))
    return x


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

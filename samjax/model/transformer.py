"""Two-way transformer of the SAM mask decoder.

Mirrors ``segment_anything/modeling/transformer.py`` (``TwoWayTransformer``,
``TwoWayAttentionBlock``, ``Attention``). Queries are the prompt tokens
[B, Nq, C]; keys are the image tokens [B, h*w, C]. Each block runs
self-attention on tokens, token->image cross-attention, an MLP on tokens and
image->token cross-attention; cross-attention projects to C / 2 channels
(``attention_downsample_rate=2``).

``token_valid`` [B, Nq] masks padded prompt tokens out of every attention in
which tokens are keys, so fixed-shape padding gives exactly the official
result for the unpadded prompt.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.model.attention import masked_attention
from samjax.model.layers import Dense, LayerNorm, MLPBlock


class Attention(nn.Module):
  """Multi-head attention with q/k/v/out projections and optional downsampling.

  q [B, Tq, C], k and v [B, Tk, C], key_valid [B, Tk] bool or None
  -> [B, Tq, C]. The projections work at C / downsample_rate channels.
  """
  embedding_dim: int
  num_heads: int
  downsample_rate: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, q, k, v, key_valid=None):
    internal = self.embedding_dim // self.downsample_rate
    if internal % self.num_heads:
      raise ValueError("num_heads must divide embedding_dim / downsample_rate")

    def heads(x, name):  # [B, T, C] -> [B, T, heads, C / downsample / heads]
      y = Dense(internal, ("embed", "heads"), dtype=self.dtype, name=name)(x)
      return y.reshape(y.shape[:-1] + (self.num_heads, -1))

    out = masked_attention(heads(q, "q_proj"), heads(k, "k_proj"), heads(v, "v_proj"),
                           key_valid)
    out = out.reshape(out.shape[:-2] + (internal,))
    return Dense(self.embedding_dim, ("heads", "embed"), dtype=self.dtype,
                 name="out_proj")(out)


class TwoWayAttentionBlock(nn.Module):
  """One two-way block: (queries [B, Nq, C], keys [B, Nk, C]) -> same shapes."""
  embedding_dim: int
  num_heads: int
  mlp_dim: int
  downsample_rate: int = 2
  skip_first_layer_pe: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe, token_valid=None):
    c, h, dt = self.embedding_dim, self.num_heads, self.dtype
    ln = lambda name: LayerNorm(eps=1e-5, dtype=dt, name=name)
    cross = lambda name: Attention(c, h, self.downsample_rate, dtype=dt, name=name)

    self_attn = Attention(c, h, dtype=dt, name="self_attn")
    if self.skip_first_layer_pe:
      # First layer: the self-attention output *replaces* the queries.
      queries = self_attn(queries, queries, queries, token_valid)
    else:
      q = queries + query_pe
      queries = queries + self_attn(q, q, queries, token_valid)
    queries = ln("norm1")(queries)

    q = queries + query_pe
    queries = queries + cross("cross_attn_token_to_image")(q, keys + key_pe, keys)
    queries = ln("norm2")(queries)

    queries = queries + MLPBlock(self.mlp_dim, act=jax.nn.relu, dtype=dt, name="mlp")(queries)
    queries = ln("norm3")(queries)

    q = queries + query_pe
    keys = keys + cross("cross_attn_image_to_token")(keys + key_pe, q, queries, token_valid)
    keys = ln("norm4")(keys)
    return queries, keys


class TwoWayTransformer(nn.Module):
  """image [B, h*w, C] + image PE [B, h*w, C] + tokens [B, Nq, C]
  -> (tokens [B, Nq, C], image tokens [B, h*w, C])."""
  depth: int
  embedding_dim: int
  num_heads: int
  mlp_dim: int
  downsample_rate: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image_embedding, image_pe, point_embedding, token_valid=None):
    queries, keys = point_embedding, image_embedding
    for i in range(self.depth):
      queries, keys = TwoWayAttentionBlock(
          self.embedding_dim, self.num_heads, self.mlp_dim, self.downsample_rate,
          skip_first_layer_pe=(i == 0), dtype=self.dtype, name=f"layers_{i}")(
              queries, keys, point_embedding, image_pe, token_valid)
    q = queries + point_embedding
    k = keys + image_pe
    queries = queries + Attention(self.embedding_dim, self.num_heads, self.downsample_rate,
                                  dtype=self.dtype, name="final_attn_token_to_image")(q, k, keys)
    queries = LayerNorm(eps=1e-5, dtype=self.dtype, name="norm_final_attn")(queries)
    return queries, keys

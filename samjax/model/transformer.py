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

from samjax.logical_axes import param_init
from samjax.model import few_token_attention
from samjax.model.attention import masked_attention
from samjax.model.layers import LayerNorm, MLPBlock, default_kernel_init, zeros


class ProjectionWeights(nn.Module):
  """The (kernel [in, out], bias [out]) of a Linear, returned instead of applied,
  so ``Attention`` can re-associate products (params as ``nn.Dense``)."""
  features: int
  axes: tuple = ("embed", "heads")

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param("kernel", param_init(default_kernel_init, self.axes),
                        (in_features, self.features), jnp.float32)
    bias = self.param("bias", param_init(zeros, (self.axes[-1],)),
                      (self.features,), jnp.float32)
    return kernel, bias


class Attention(nn.Module):
  """Multi-head attention with q/k/v/out projections and optional downsampling.

  [B, Tq, C] queries, [B, Tk, C] keys/values -> [B, Tq, C]. When one side
  has fewer tokens than the per-head width (prompt tokens vs 4096 image
  tokens) the products are re-associated (``few_token_attention``): exact,
  and several times fewer FLOPs on the image side.
  """
  embedding_dim: int
  num_heads: int
  downsample_rate: int = 1
  dtype: jnp.dtype = jnp.float32
  factorize: bool = True

  @nn.compact
  def __call__(self, q, k, v, key_valid=None):
    internal = self.embedding_dim // self.downsample_rate
    if internal % self.num_heads:
      raise ValueError("num_heads must divide embedding_dim / downsample_rate")
    h = self.num_heads
    d = internal // h
    dt = self.dtype
    wq, bq = ProjectionWeights(internal, name="q_proj")(q.shape[-1])
    wk, bk = ProjectionWeights(internal, name="k_proj")(k.shape[-1])
    wv, bv = ProjectionWeights(internal, name="v_proj")(v.shape[-1])
    wo, bo = ProjectionWeights(self.embedding_dim, ("heads", "embed"),
                               name="out_proj")(internal)
    wq, bq, wk, bk, wv, bv, wo, bo = (a.astype(dt) for a in (wq, bq, wk, bk, wv, bv, wo, bo))
    q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
    proj = lambda x, w, b: (x @ w + b).reshape(x.shape[:-1] + (h, d))
    scale = d ** -0.5
    tq, tk = q.shape[1], k.shape[1]

    if self.factorize and tq < d and tk > tq:      # token -> image
      out = few_token_attention.few_queries(proj(q, wq, bq), (k, v), wk, bk, wv, bv,
                                            scale=scale)
      return out.reshape(out.shape[:-2] + (internal,)) @ wo + bo
    if self.factorize and tk < d and tq > tk:      # image -> token
      return few_token_attention.many_queries(q, wq, bq, proj(k, wk, bk), proj(v, wv, bv),
                                              wo, bo, key_valid, scale=scale)
    # Image tokens shared by several prompts (see TwoWayAttentionBlock): the
    # direct form needs one copy per prompt.
    rows = max(q.shape[0], k.shape[0])
    q, k, v = (per_prompt(x, rows) for x in (q, k, v))
    out = masked_attention(proj(q, wq, bq), proj(k, wk, bk), proj(v, wv, bv), key_valid)
    return out.reshape(out.shape[:-2] + (internal,)) @ wo + bo


def per_prompt(x, rows: int):
  """[b, ...] shared per image -> [rows, ...] (rows / b consecutive copies of
  each image's entry, the prompt-major order of the decoder's batch)."""
  return x if x.shape[0] == rows else jnp.repeat(x, rows // x.shape[0], axis=0)


def add_per_prompt(shared, per_row):
  """[b, ...] + [b*m, ...] -> [b*m, ...]: each image's entry added to its m
  prompts' rows (plain ``+`` when both are per prompt)."""
  if shared.shape[0] == per_row.shape[0]:
    return shared + per_row
  b = shared.shape[0]
  rows = per_row.reshape((b, per_row.shape[0] // b) + per_row.shape[1:])
  return (shared[:, None] + rows).reshape(per_row.shape)


class TwoWayAttentionBlock(nn.Module):
  """One two-way block: (queries [B, Nq, C], keys [B, Nk, C]) -> same shapes."""
  embedding_dim: int
  num_heads: int
  mlp_dim: int
  downsample_rate: int = 2
  skip_first_layer_pe: bool = False
  dtype: jnp.dtype = jnp.float32
  factorize: bool = True

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe, token_valid=None, keys_pe=None):
    """``keys_pe``: optional precomputed keys + key_pe [B, Nk, C]; the first
    block's are the same for every prompt of an image
    (``Sam.decoder_image_terms``). With it, ``keys`` and ``keys_pe`` may be
    [b, Nk, C], one per image, shared by the B / b consecutive prompts of
    each image (queries [B, Nq, C]): the attentions then read them once per
    image, and the block returns per-prompt keys [B, Nk, C]."""
    c, h, dt = self.embedding_dim, self.num_heads, self.dtype
    ln = lambda name: LayerNorm(eps=1e-5, dtype=dt, name=name)
    if self.skip_first_layer_pe:
      # First layer: the self-attention output *replaces* the queries.
      queries = Attention(c, h, dtype=dt, factorize=self.factorize,
                          name="self_attn")(queries, queries, queries, token_valid)
    else:
      q = queries + query_pe
      queries = queries + Attention(c, h, dtype=dt, factorize=self.factorize,
                                    name="self_attn")(q, q, queries, token_valid)
    queries = ln("norm1")(queries)

    q, k = queries + query_pe, keys + key_pe if keys_pe is None else keys_pe
    queries = queries + Attention(c, h, self.downsample_rate, dtype=dt,
                                  factorize=self.factorize,
                                  name="cross_attn_token_to_image")(q, k, keys)
    queries = ln("norm2")(queries)

    queries = queries + MLPBlock(self.mlp_dim, act=jax.nn.relu, dtype=dt,
                                 name="mlp")(queries)
    queries = ln("norm3")(queries)

    q, k = queries + query_pe, keys + key_pe if keys_pe is None else keys_pe
    keys = add_per_prompt(keys, Attention(c, h, self.downsample_rate, dtype=dt,
                                          factorize=self.factorize,
                                          name="cross_attn_image_to_token")(
                                              k, q, queries, token_valid))
    keys = ln("norm4")(keys)
    return queries, keys


class TwoWayTransformer(nn.Module):
  """image [B, h*w, C] + image PE + tokens [B, Nq, C] -> (tokens, image tokens)."""
  depth: int
  embedding_dim: int
  num_heads: int
  mlp_dim: int
  downsample_rate: int = 2
  dtype: jnp.dtype = jnp.float32
  factorize: bool = True

  @nn.compact
  def __call__(self, image_embedding, image_pe, point_embedding, token_valid=None,
               first_keys_pe=None, final_tokens: tuple[int, ...] | None = None):
    """``first_keys_pe``: optional image_embedding + image_pe [B, h*w, C] for
    the first block (see TwoWayAttentionBlock); with it, ``image_embedding``
    and ``first_keys_pe`` may be [b, h*w, C], one per image, shared by the
    B / b consecutive prompts of each image.

    ``final_tokens``: the token positions whose outputs are read (static);
    only they query the image in the final attention, and only they are
    returned ([B, len(final_tokens), C]). The final attention updates
    tokens, not image tokens, so nothing else depends on the others (the
    prompt tokens' final outputs are never read by the mask decoder)."""
    queries, keys = point_embedding, image_embedding
    for i in range(self.depth):
      queries, keys = TwoWayAttentionBlock(
          self.embedding_dim, self.num_heads, self.mlp_dim, self.downsample_rate,
          skip_first_layer_pe=(i == 0), dtype=self.dtype, factorize=self.factorize,
          name=f"layers_{i}")(
              queries, keys, point_embedding, image_pe, token_valid,
              first_keys_pe if i == 0 else None)
    if final_tokens is not None:
      pick = lambda x: jnp.concatenate([x[:, t:t + 1] for t in final_tokens], axis=1)
      queries, point_embedding = pick(queries), pick(point_embedding)
    q = queries + point_embedding
    k = keys + image_pe
    queries = queries + Attention(self.embedding_dim, self.num_heads,
                                  self.downsample_rate, dtype=self.dtype,
                                  factorize=self.factorize,
                                  name="final_attn_token_to_image")(q, k, keys)
    queries = LayerNorm(eps=1e-5, dtype=self.dtype, name="norm_final_attn")(queries)
    return queries, keys

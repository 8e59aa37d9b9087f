"""The two-way transformer in its factorized form, for few prompt tokens.

Same parameters and the same values as ``samjax.model.transformer`` (tests
compare them), computed differently: cross-attention between a handful of
prompt tokens and the 4096 image tokens is re-associated
(``few_token_attention``), and the first block can read image-side
projections made once per image (``project_image_heads``) instead of per
prompt. ``final_tokens`` decodes only the output tokens that are read.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.decoding import few_token_attention
from samjax.logical_axes import param_init
from samjax.model import transformer as reference
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

  @nn.compact
  def __call__(self, q, k, v, key_valid=None, image_heads=None):
    """``image_heads``: optional projections of one side, precomputed per
    image (``project_image_heads``), head-major [b, H, N, d] and shared by
    the B / b consecutive prompt rows of each of b images: (k, v) heads when
    the image tokens are the keys and values (``k`` and ``v`` are then not
    read, pass None), or (q,) heads when they are the queries (``q`` not
    read)."""
    internal = self.embedding_dim // self.downsample_rate
    if internal % self.num_heads:
      raise ValueError("num_heads must divide embedding_dim / downsample_rate")
    h = self.num_heads
    d = internal // h
    dt = self.dtype
    c = self.embedding_dim
    wq, bq = ProjectionWeights(internal, name="q_proj")(c)
    wk, bk = ProjectionWeights(internal, name="k_proj")(c)
    wv, bv = ProjectionWeights(internal, name="v_proj")(c)
    wo, bo = ProjectionWeights(self.embedding_dim, ("heads", "embed"),
                               name="out_proj")(internal)
    wq, bq, wk, bk, wv, bv, wo, bo = (a.astype(dt) for a in (wq, bq, wk, bk, wv, bv, wo, bo))
    proj = lambda x, w, b: (x.astype(dt) @ w + b).reshape(x.shape[:-1] + (h, d))
    scale = d ** -0.5
    if image_heads is not None and len(image_heads) == 2:   # token -> image
      kh, vh = (x.astype(dt) for x in image_heads)
      out = few_token_attention.image_keys(proj(q, wq, bq), kh, vh, scale=scale)
      return out.reshape(out.shape[:-2] + (internal,)) @ wo + bo
    if image_heads is not None:                              # image -> token
      return few_token_attention.image_queries(image_heads[0].astype(dt), proj(k, wk, bk),
                                               proj(v, wv, bv), wo, bo, key_valid,
                                               scale=scale)
    q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
    tq, tk = q.shape[1], k.shape[1]

    if tq < d and tk > tq:      # token -> image
      out = few_token_attention.few_queries(proj(q, wq, bq), (k, v), wk, bk, wv, bv,
                                            scale=scale)
      return out.reshape(out.shape[:-2] + (internal,)) @ wo + bo
    if tk < d and tq > tk:      # image -> token
      return few_token_attention.many_queries(q, wq, bq, proj(k, wk, bk), proj(v, wv, bv),
                                              wo, bo, key_valid, scale=scale)
    out = masked_attention(proj(q, wq, bq), proj(k, wk, bk), proj(v, wv, bv), key_valid)
    return out.reshape(out.shape[:-2] + (internal,)) @ wo + bo


def project_image_heads(attention_params, x, num_heads: int, dtype, names=("k_proj", "v_proj")):
  """Image tokens through an ``Attention``'s projections, head-major.

  attention_params: that Attention's params ({name: {kernel, bias}});
  x: [b, N, C] image tokens, or a tuple with one per name (k and v read
  different tokens in SAM's token -> image attention).
  Returns one [b, H, N, d] array per name (x @ kernel + bias, split into
  heads): the ``image_heads`` ``Attention`` takes.
  """
  xs = x if isinstance(x, tuple) else (x,) * len(names)
  out = []
  for name, xi in zip(names, xs):
    w = attention_params[name]["kernel"].astype(dtype)
    bias = attention_params[name]["bias"].astype(dtype)
    y = xi.astype(dtype) @ w + bias
    out.append(jnp.transpose(y.reshape(y.shape[:-1] + (num_heads, -1)), (0, 2, 1, 3)))
  return tuple(out)


def add_per_prompt(shared, per_row):
  """[b, ...] + [b*m, ...] -> [b*m, ...]: each image's entry added to its m
  prompts' rows (plain ``+`` when both are per prompt)."""
  if shared.shape[0] == per_row.shape[0]:
    return shared + per_row
  b = shared.shape[0]
  rows = per_row.reshape((b, per_row.shape[0] // b) + per_row.shape[1:])
  return (shared[:, None] + rows).reshape(per_row.shape)


class TwoWayAttentionBlock(reference.TwoWayAttentionBlock):
  """The reference block's fields and parameters, factorized attention."""

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe, token_valid=None, image_heads=None):
    """``image_heads``: optional (token->image k, v, image->token q) heads
    of the keys, [b, H, Nk, d] each (``InteractivePlan.prepare``): the first
    block's image side is the same for every prompt of an image without a
    mask input, so it is projected once per image. With them, ``keys`` is
    [b, Nk, C], one per image, shared by the B / b consecutive prompts of
    each image (queries [B, Nq, C]), ``key_pe`` is not read, and the block
    returns per-prompt keys [B, Nk, C]."""
    c, h, dt = self.embedding_dim, self.num_heads, self.dtype
    ln = lambda name: LayerNorm(eps=1e-5, dtype=dt, name=name)
    if self.skip_first_layer_pe:
      # First layer: the self-attention output *replaces* the queries.
      queries = Attention(c, h, dtype=dt,
                          name="self_attn")(queries, queries, queries, token_valid)
    else:
      q = queries + query_pe
      queries = queries + Attention(c, h, dtype=dt,
                                    name="self_attn")(q, q, queries, token_valid)
    queries = ln("norm1")(queries)

    t2i = Attention(c, h, self.downsample_rate, dtype=dt,
                    name="cross_attn_token_to_image")
    q = queries + query_pe
    if image_heads is None:
      queries = queries + t2i(q, keys + key_pe, keys)
    else:
      queries = queries + t2i(q, None, None, image_heads=image_heads[:2])
    queries = ln("norm2")(queries)

    queries = queries + MLPBlock(self.mlp_dim, act=jax.nn.relu, dtype=dt,
                                 name="mlp")(queries)
    queries = ln("norm3")(queries)

    i2t = Attention(c, h, self.downsample_rate, dtype=dt,
                    name="cross_attn_image_to_token")
    q = queries + query_pe
    if image_heads is None:
      update = i2t(keys + key_pe, q, queries, token_valid)
    else:
      update = i2t(None, q, queries, token_valid, image_heads=image_heads[2:])
    keys = add_per_prompt(keys, update)
    keys = ln("norm4")(keys)
    return queries, keys


class TwoWayTransformer(reference.TwoWayTransformer):
  """The reference transformer's fields and parameters, factorized blocks:
  image [B, h*w, C] + image PE + tokens [B, Nq, C] -> (tokens, image tokens)."""

  @nn.compact
  def __call__(self, image_embedding, image_pe, point_embedding, token_valid=None,
               first_image_heads=None, final_tokens: tuple[int, ...] | None = None):
    """``first_image_heads``: optional projections of the image side of the
    first block (see TwoWayAttentionBlock); with them, ``image_embedding``
    may be [b, h*w, C], one per image, shared by the B / b consecutive
    prompts of each image.

    ``final_tokens``: the token positions whose outputs are read (static);
    only they query the image in the final attention, and only they are
    returned ([B, len(final_tokens), C]). The final attention updates
    tokens, not image tokens, so nothing else depends on the others (the
    prompt tokens' final outputs are never read by the mask decoder)."""
    queries, keys = point_embedding, image_embedding
    for i in range(self.depth):
      queries, keys = TwoWayAttentionBlock(
          self.embedding_dim, self.num_heads, self.mlp_dim, self.downsample_rate,
          skip_first_layer_pe=(i == 0), dtype=self.dtype,
          name=f"layers_{i}")(
              queries, keys, point_embedding, image_pe, token_valid,
              first_image_heads if i == 0 else None)
    if final_tokens is not None:
      pick = lambda x: jnp.concatenate([x[:, t:t + 1] for t in final_tokens], axis=1)
      queries, point_embedding = pick(queries), pick(point_embedding)
    q = queries + point_embedding
    k = keys + image_pe
    queries = queries + Attention(self.embedding_dim, self.num_heads,
                                  self.downsample_rate, dtype=self.dtype,
                                  name="final_attn_token_to_image")(q, k, keys)
    queries = LayerNorm(eps=1e-5, dtype=self.dtype, name="norm_final_attn")(queries)
    return queries, keys

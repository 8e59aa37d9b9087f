"""Exact re-association of attention between few prompt tokens and many image tokens.

In the two-way transformer one side of every cross-attention is the handful
of prompt tokens (T = 5 output tokens + a few prompt tokens) and the other
the h*w = 4096 image tokens. Projecting all 4096 image tokens to the
attention width costs N*C*I per projection, yet the result is only ever
contracted against T vectors per head. Moving the projection onto the token
side is exact algebra (matrix products re-associated) and cuts the
image-side work from N*C*I to N*C*H*T per projection, a win whenever T < the
per-head width d (16 at SAM's 128-wide, 8-head cross attention):

  token -> image (few queries q_t, many keys/values x_n):
    score[t, n] = q_t . (x_n Wk_h + bk_h)  = (Wk_h q_t) . x_n + q_t . bk_h
    out[t]      = sum_n p[t, n] (x_n Wv_h + bv_h) = (sum_n p[t, n] x_n) Wv_h + bv_h
  image -> token (many queries x_n, few keys/values k_t, v_t):
    score[n, t] = (x_n Wq_h + bq_h) . k_t  = x_n . (Wq_h k_t) + bq_h . k_t
    out[n]      = sum_h sum_t p[n, t] (v_t Wo_h) + bo        (out_proj folded in)

Softmax, masking and scaling are unchanged; results equal the direct form up
to float rounding (tests compare both).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Layout: the image tokens are never copied transposed (on a CPU a
# [4096, 256] transposed copy costs a click about as much as the products;
# an early [small, C] @ [C, N] form copied the keys once per block, ~15 % of
# a click). Scores are [N, small] (tokens as rows, softmax down the
# columns) or [small, N] (the dot reads the tokens' channel axis in place,
# softmax along contiguous rows), whichever measured faster for the number
# of prompts per step (see few_queries and image_keys).
#
# Shared image tokens: few_queries / many_queries also take an image side
# [b, N, C] shared by B = b*m prompt rows (m consecutive rows per image; the
# m prompts become more columns of one product per image). The model's
# shared case, the first block of prompts without a mask input, now goes
# through the projected image heads below instead; its other attentions
# read per-prompt image tokens (m = 1).


def _per_image(rows, images: int):
  """[b*m, T, H, d] prompt-side rows -> [b, m, T, H, d] for b images."""
  if rows.shape[0] % images:
    raise ValueError(f"{rows.shape[0]} prompt rows do not split over {images} images")
  return rows.reshape((images, rows.shape[0] // images) + rows.shape[1:])


def few_queries(qh, x, wk, bk, wv, bv, *, scale: float):
  """Few projected queries attend over many raw tokens.

  Args:
    qh: [B, T, H, d] projected queries (T small).
    x: [B, N, C] raw key/value tokens (the k / v inputs; may differ, pass a
      tuple (xk, xv) for different ones), or [b, N, C] shared by the B / b
      consecutive query rows of each of b images.
    wk, wv: [C, H*d] projection kernels; bk, bv: [H*d] biases.
  Returns:
    [B, T, H, d] attention output (before out_proj).
  """
  xk, xv = x if isinstance(x, tuple) else (x, x)
  h, d = qh.shape[-2:]
  c = xk.shape[-1]
  wk_h = wk.reshape(c, h, d)
  q5 = _per_image(qh, xk.shape[0])                                 # [b, m, T, H, d]
  bias = jnp.einsum("bmthd,hd->bmht", q5, bk.reshape(h, d)).astype(jnp.float32)
  if qh.shape[0] > 1:
    # Scores [b, m, H, T, N]: the softmax reduces over the contiguous N axis
    # (64 prompts in chunks of 4: decode 3 % faster than the layout below,
    # in-process A/B, ViT-B, 2-core EPYC).
    g = jnp.einsum("bmthd,chd->bmhtc", q5, wk_h)                   # Wk_h q_t
    scores = jnp.einsum("bmhtc,bnc->bmhtn", g, xk, preferred_element_type=jnp.float32)
    p = jax.nn.softmax((scores + bias[..., None]) * scale, axis=-1)   # over the N keys
    pooled = jnp.einsum("bmhtn,bnc->bmhtc", p.astype(xv.dtype), xv)
  else:
    # One prompt row (a click): [N, C] @ [C, H*T] scores, N the row axis,
    # are faster in the whole decode (that layout: 18 % slower there).
    g = jnp.einsum("bmthd,chd->bcmht", q5, wk_h)
    scores = jnp.einsum("bnc,bcmht->bnmht", xk, g, preferred_element_type=jnp.float32)
    p = jax.nn.softmax((scores + bias[:, None]) * scale, axis=1)   # over the N keys
    pooled = jnp.einsum("bnmht,bnc->bmhtc", p.astype(xv.dtype), xv)  # sum_n p x_n
  out = jnp.einsum("bmhtc,chd->bmthd", pooled, wv.reshape(c, h, d))
  return out.reshape(qh.shape) + bv.reshape(h, d)


def many_queries(x, wq, bq, kh, vh, wo, bo, key_valid, *, scale: float):
  """Many raw query tokens attend over few projected keys/values; out_proj folded in.

  Args:
    x: [B, N, C] raw query tokens, or [b, N, C] shared by the B / b
      consecutive key rows of each of b images.
    wq: [C, H*d]; bq: [H*d] query projection.
    kh, vh: [B, T, H, d] projected keys / values (T small).
    wo: [H*d, C_out]; bo: [C_out] output projection.
    key_valid: [B, T] bool or None.
  Returns:
    [B, N, C_out] (already through out_proj).
  """
  h, d = kh.shape[-2:]
  b, c = x.shape[0], x.shape[-1]
  k5 = _per_image(kh, b)                                           # [b, m, T, H, d]
  g = jnp.einsum("bmthd,chd->bcmht", k5, wq.reshape(c, h, d))      # Wq_h k_t
  scores = jnp.einsum("bnc,bcmht->bnmht", x, g, preferred_element_type=jnp.float32)
  scores = scores + jnp.einsum("hd,bmthd->bmht", bq.reshape(h, d), k5).astype(
      jnp.float32)[:, None]
  return _pool_tokens(scores, _per_image(vh, b), wo, bo, key_valid, scale=scale)


def _pool_tokens(scores, v5, wo, bo, key_valid, *, scale: float):
  """Softmax of [b, N, m, H, T] scores over the T keys, then the values
  [b, m, T, H, d] through out_proj: -> [b*m, N, C_out]."""
  b, n, m, h, t = scores.shape
  if key_valid is not None:
    scores = jnp.where(key_valid.reshape(b, 1, -1, 1, t), scores, jnp.finfo(jnp.float32).min)
  p = jax.nn.softmax(scores * scale, axis=-1)                      # over the T keys
  u = jnp.einsum("bmthd,hdo->bmhto", v5, wo.reshape(h, v5.shape[-1], -1))  # v_t Wo_h
  out = jnp.einsum("bnmht,bmhto->bmno", p.astype(u.dtype), u)
  return out.reshape(b * m, n, -1) + bo


# Projected image heads. The first two-way block of prompts without a mask
# input projects the same image tokens for every prompt: projected once per
# image (``SamModel.decoder_image_terms``), head-major [b, H, N, d], each
# prompt's attention against them is H products of width d (16 at SAM's
# size) per token instead of the re-associated [N, C] @ [C, H*T] above: 16x
# fewer multiply-adds, and the projections are the official's own
# (x @ W + bias, then the dot).


def image_keys(qh, kh, vh, *, scale: float):
  """Prompt queries attend over one image's projected keys and values.

  Args:
    qh: [B, T, H, d] projected queries, B = b*m prompt rows (m per image).
    kh, vh: [b, H, N, d] projected image keys / values (biases included),
      shared by the m consecutive rows of each image.
  Returns:
    [B, T, H, d] attention output (before out_proj).
  """
  q5 = _per_image(qh, kh.shape[0])                                 # [b, m, T, H, d]
  if q5.shape[1] == 1:
    # One prompt per image (a click): scores [b, H, 1, T, N], the softmax
    # over the contiguous N axis (0.68 vs 1.08 ms for ViT-B on a 2-core EPYC).
    scores = jnp.einsum("bmthd,bhnd->bhmtn", q5, kh, preferred_element_type=jnp.float32)
    p = jax.nn.softmax(scores * scale, axis=-1)
    out = jnp.einsum("bhmtn,bhnd->bmthd", p.astype(vh.dtype), vh)
  else:
    # Several: [b, H, N, m*T] products are wider, and they win (4 prompts:
    # 1.8 vs 2.4 ms) although the softmax then reduces over a strided axis.
    scores = jnp.einsum("bhnd,bmthd->bhnmt", kh, q5, preferred_element_type=jnp.float32)
    p = jax.nn.softmax(scores * scale, axis=2)                     # over the N keys
    out = jnp.einsum("bhnmt,bhnd->bmthd", p.astype(vh.dtype), vh)
  return out.reshape(qh.shape)


def image_queries(qh, kh, vh, wo, bo, key_valid, *, scale: float):
  """One image's projected queries attend over each prompt's few keys/values;
  out_proj folded in.

  Args:
    qh: [b, H, N, d] projected image queries (bias included), shared by the
      B / b consecutive prompt rows of each image.
    kh, vh: [B, T, H, d] projected keys / values; key_valid: [B, T] or None.
    wo: [H*d, C_out]; bo: [C_out].
  Returns:
    [B, N, C_out] (already through out_proj).
  """
  b = qh.shape[0]
  scores = jnp.einsum("bhnd,bmthd->bnmht", qh, _per_image(kh, b),
                      preferred_element_type=jnp.float32)
  return _pool_tokens(scores, _per_image(vh, b), wo, bo, key_valid, scale=scale)

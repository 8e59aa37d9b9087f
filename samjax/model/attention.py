"""Attention kernels: fused XLA / cuDNN, and a query-chunked CPU path.

The image encoder's global-attention blocks attend over 64x64 = 4096 tokens.
On a CPU the [B, heads, 4096, 4096] float32 score tensor (800 MB at ViT-B)
does not fit in cache and the op becomes memory bound; processing the queries
in chunks keeps each chunk's scores cache-resident (docs/architecture.md,
measured facts). The windowed blocks' [windows, heads, 196, 196] scores are
memory bound for the same reason and run one window at a time. On GPU/TPU
the fused ``jax.nn.dot_product_attention`` is used instead, which can
dispatch to cuDNN flash attention.

Layouts: q/k/v [B, T, N, D] (batch, tokens, heads, head_dim), like
``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def resolve_impl(impl: str) -> str:
  """Chooses the kernel for ``impl='auto'``: the cache-blocked one on CPU, where
  both window-sized (196 tokens) and global (4096 tokens) attention are
  faster blocked (see ``rel_pos_attention``); the fused one elsewhere.
  """
  if impl != "auto":
    return impl
  return "chunked" if jax.default_backend() == "cpu" else "xla"


def _largest_divisor_at_most(n: int, limit: int) -> int:
  for c in range(min(n, limit), 0, -1):
    if n % c == 0:
      return c
  return 1


def rel_pos_attention(q, k, v, rel_h, rel_w, *, scale: float, impl: str = "auto",
                      query_chunk: int = 256):
  """Softmax attention with decomposed relative-position bias (ViTDet / SAM).

  Args:
    q, k, v: [B, T, N, D] with T = kh * kw tokens of a kh x kw grid.
    rel_h: [B, N, T, kh] float32, bias indexed by the key's row.
    rel_w: [B, N, T, kw] float32, bias indexed by the key's column.
    scale: multiplies q before the dot product (official ``q * self.scale``).
    impl: 'auto' | 'xla' | 'cudnn' | 'chunked'.
    query_chunk: queries per (head, chunk) step of the chunked kernel; an
      attention of at most this many tokens (a 14x14 window) runs whole, one
      batch item (window) at a time.

  Returns:
    [B, T, N, D] in q's dtype.
  """
  b, t, n, _ = q.shape
  kh, kw = rel_h.shape[-1], rel_w.shape[-1]
  impl = resolve_impl(impl)
  if impl in ("xla", "cudnn"):
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n, t, kh * kw)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias.astype(q.dtype), scale=scale,
        implementation=None if impl == "xla" else "cudnn")
  if impl != "chunked":
    raise ValueError(f"unknown attention impl {impl!r}")
  if t <= query_chunk:
    return _per_item_attention(q, k, v, rel_h, rel_w, scale)
  return _query_chunked_attention(q, k, v, rel_h, rel_w, scale, query_chunk)


def _unnormalized_softmax_av(s, v):
  """softmax(s) @ v with the division moved after the product.

  s: [..., Tq, Tk] float32 scores, v: [..., Tk, D] -> [..., Tq, D] float32.
  Dividing the [Tq, D] result instead of the [Tq, Tk] probabilities saves a
  pass over the score block; the max shift only guards exp's range, so it
  carries no gradient (softmax does not depend on it).
  """
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  e = jnp.exp(s - m)
  denom = jnp.sum(e, axis=-1, keepdims=True)
  return jnp.matmul(e.astype(v.dtype), v, preferred_element_type=jnp.float32) / denom


def _per_item_attention(q, k, v, rel_h, rel_w, scale):
  """Whole attention of one batch item (a window) at a time, bias in the matmul.

  The windowed blocks attend within 14x14 windows: per window all heads'
  scores are [N, 196, 196] (1.8 MB at ViT-B), which stays in cache when the
  windows are processed one by one, where the batched op streams a [nW, N,
  196, 196] tensor through memory several times. The decomposed rel-pos bias
  rel_h[q, row(key)] + rel_w[q, col(key)] is folded into the score matmul
  by appending rel_h, rel_w to the (scaled) queries and the key's one-hot row
  and column to the keys: [scale q, rel_h, rel_w] . [k, onehot(row),
  onehot(col)] = scale q.k + bias, so no [T, T] bias is ever materialised.
  """
  _, t, n, _ = q.shape
  kh, kw = rel_h.shape[-1], rel_w.shape[-1]
  dt = q.dtype  # the bias joins q's dtype, as in the fused path
  rows = jnp.repeat(jnp.eye(kh, dtype=dt), kw, axis=0)         # [T, kh]: key's row
  cols = jnp.tile(jnp.eye(kw, dtype=dt), (kh, 1))              # [T, kw]: key's column
  key_pos = jnp.broadcast_to(jnp.concatenate([rows, cols], -1), (n, t, kh + kw))

  def one_item(args):
    qi, ki, vi, hi, wi = args  # [T, N, D] x3, [N, T, kh], [N, T, kw]
    qa = jnp.concatenate([(qi * jnp.asarray(scale, dt)).transpose(1, 0, 2),
                          hi.astype(dt), wi.astype(dt)], -1)     # [N, T, D + kh + kw]
    ka = jnp.concatenate([ki.transpose(1, 0, 2), key_pos], -1)
    s = jnp.einsum("nqd,nkd->nqk", qa, ka, preferred_element_type=jnp.float32)
    out = _unnormalized_softmax_av(s, vi.transpose(1, 0, 2))   # [N, T, D]
    return out.transpose(1, 0, 2).astype(q.dtype)

  return jax.lax.map(one_item, (q, k, v, rel_h, rel_w))


def _query_chunked_attention(q, k, v, rel_h, rel_w, scale, query_chunk):
  """One head and one chunk of queries at a time (global attention on CPU).

  Each step's [c, T] score block stays in cache (the whole [N, T, T] tensor,
  800 MB at ViT-B, is memory bound on CPU). The outer loop over heads keeps
  that head's K/V hot.
  """
  b, t, n, d = q.shape
  kh, kw = rel_h.shape[-1], rel_w.shape[-1]
  c = _largest_divisor_at_most(t, query_chunk)
  nc = t // c
  qh = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3).reshape(b * n, nc, c, d)
  k_heads = k.transpose(0, 2, 1, 3).reshape(b * n, t, d)
  v_heads = v.transpose(0, 2, 1, 3).reshape(b * n, t, d)
  rh = rel_h.reshape(b * n, nc, c, kh)
  rw = rel_w.reshape(b * n, nc, c, kw)

  def one_head(args):
    q_head, k_head, v_head, rh_head, rw_head = args  # [nc, c, D], [T, D], ..

    def one_chunk(chunk):
      qc, rhc, rwc = chunk  # [c, D], [c, kh], [c, kw]
      s = jnp.dot(qc, k_head.T, preferred_element_type=jnp.float32)
      s = s.reshape(c, kh, kw) + rhc[:, :, None] + rwc[:, None, :]
      return _unnormalized_softmax_av(s.reshape(c, t), v_head).astype(q.dtype)

    return jax.lax.map(one_chunk, (q_head, rh_head, rw_head))

  out = jax.lax.map(one_head, (qh, k_heads, v_heads, rh, rw))  # [B*N, nc, c, D]
  return out.reshape(b, n, t, d).transpose(0, 2, 1, 3)


def masked_attention(q, k, v, key_valid=None):
  """Plain scaled dot-product attention with an optional key-validity mask.

  Args:
    q: [B, T, N, D]; k, v: [B, S, N, D].
    key_valid: optional [B, S] bool; invalid keys get zero weight (used for
      padded prompt tokens, so padding never changes the result).
  Returns:
    [B, T, N, D].
  """
  mask = None if key_valid is None else key_valid[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask)

"""Attention kernels: fused XLA / cuDNN, and a query-chunked CPU path.

The image encoder's global-attention blocks attend over 64x64 = 4096 tokens.
On a CPU the [B, heads, 4096, 4096] float32 score tensor (800 MB at ViT-B)
does not fit in cache and the op becomes memory bound; processing the queries
in chunks keeps each chunk's scores cache-resident (docs/architecture.md, measured facts). On
GPU/TPU the fused ``jax.nn.dot_product_attention`` is used instead, which can
dispatch to cuDNN flash attention.

Layouts: q/k/v [B, T, N, D] (batch, tokens, heads, head_dim), like
``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this many queries (e.g. 14x14 windows) the fused kernel is faster.
CHUNKED_MIN_QUERIES = 1024


def resolve_impl(impl: str, num_queries: int) -> str:
  """Chooses the kernel for ``impl='auto'``: chunked on CPU for long inputs."""
  if impl != "auto":
    return impl
  if jax.default_backend() == "cpu" and num_queries >= CHUNKED_MIN_QUERIES:
    return "chunked"
  return "xla"


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
    query_chunk: queries per (head, chunk) step of the chunked kernel.

  Returns:
    [B, T, N, D] in q's dtype.
  """
  b, t, n, d = q.shape
  kh, kw = rel_h.shape[-1], rel_w.shape[-1]
  impl = resolve_impl(impl, t)
  if impl in ("xla", "cudnn"):
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n, t, kh * kw)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias.astype(q.dtype), scale=scale,
        implementation=None if impl == "xla" else "cudnn")
  if impl != "chunked":
    raise ValueError(f"unknown attention impl {impl!r}")

  # One head and one chunk of queries at a time: each step's [c, T] score
  # block stays in cache (docs/architecture.md: the whole [N, T, T] tensor is memory
  # bound on CPU). Outer loop over heads keeps that head's K/V hot.
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
      p = jax.nn.softmax(s.reshape(c, t), axis=-1)
      return jnp.dot(p.astype(v_head.dtype), v_head)

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

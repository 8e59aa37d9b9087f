"""Attention kernels: fused XLA / cuDNN, and a query-chunked CPU path.

The image encoder's global-attention blocks attend over 64x64 = 4096 tokens.
On a CPU the [B, heads, 4096, 4096] float32 score tensor (800 MB at ViT-B)
does not fit in cache and the op becomes memory bound; processing the queries
in chunks keeps each chunk's scores cache-resident (see DESIGN.md). On
GPU/TPU the fused ``jax.nn.dot_product_attention`` is used instead, which can
dispatch to cuDNN flash attention.

Layouts: q/k/v [B, T, N, D] (batch, tokens, heads, head_dim), like
``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def resolve_impl(impl: str, num_queries: int, chunk: int) -> str:
  """Chooses the kernel for ``impl='auto'``: chunked on CPU for long inputs."""
  if impl != "auto":
    return impl
  if jax.default_backend() == "cpu" and num_queries > chunk:
    return "chunked"
  return "xla"


def _largest_divisor_at_most(n: int, limit: int) -> int:
  for c in range(min(n, limit), 0, -1):
    if n % c == 0:
      return c
  return 1


def rel_pos_attention(q, k, v, rel_h, rel_w, *, scale: float, impl: str = "auto",
                      query_chunk: int = 1024):
  """Softmax attention with decomposed relative-position bias (ViTDet / SAM).

  Args:
    q, k, v: [B, T, N, D] with T = kh * kw tokens of a kh x kw grid.
    rel_h: [B, N, T, kh] float32, bias indexed by the key's row.
    rel_w: [B, N, T, kw] float32, bias indexed by the key's column.
    scale: multiplies q before the dot product (official ``q * self.scale``).
    impl: 'auto' | 'xla' | 'cudnn' | 'chunked'.
    query_chunk: queries per chunk for the chunked kernel.

  Returns:
    [B, T, N, D] in q's dtype.
  """
  b, t, n, d = q.shape
  kh, kw = rel_h.shape[-1], rel_w.shape[-1]
  impl = resolve_impl(impl, t, query_chunk)
  if impl in ("xla", "cudnn"):
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n, t, kh * kw)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias.astype(q.dtype), scale=scale,
        implementation=None if impl == "xla" else "cudnn")
  if impl != "chunked":
    raise ValueError(f"unknown attention impl {impl!r}")

  c = _largest_divisor_at_most(t, query_chunk)
  nc = t // c
  qs = (q * jnp.asarray(scale, q.dtype)).reshape(b, nc, c, n, d).transpose(1, 0, 2, 3, 4)
  rh = rel_h.reshape(b, n, nc, c, kh).transpose(2, 0, 1, 3, 4)
  rw = rel_w.reshape(b, n, nc, c, kw).transpose(2, 0, 1, 3, 4)

  def one_chunk(args):
    qc, rhc, rwc = args  # [B, c, N, D], [B, N, c, kh], [B, N, c, kw]
    s = jnp.einsum("bqnd,bknd->bnqk", qc, k, preferred_element_type=jnp.float32)
    s = s.reshape(b, n, c, kh, kw) + rhc[..., :, None] + rwc[..., None, :]
    p = jax.nn.softmax(s.reshape(b, n, c, kh * kw), axis=-1)
    return jnp.einsum("bnqk,bknd->bqnd", p.astype(v.dtype), v)

  out = jax.lax.map(one_chunk, (qs, rh, rw))  # [nc, B, c, N, D]
  return out.transpose(1, 0, 2, 3, 4).reshape(b, t, n, d)


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

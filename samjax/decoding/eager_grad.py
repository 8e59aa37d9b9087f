"""A sum of independent scalar terms whose gradient is computed chunk by chunk
in the forward pass.

Training's decoder passes are such sums: one pass's loss is a sum over
prompt chunks of a per-chunk loss, and the chunks share only the decoder
parameters and the image embeddings. Reverse-mode autodiff would keep every
chunk's activations until the backward pass (~0.3 GB per prompt and pass at
ViT size, fp32), or recompute them there (``jax.checkpoint``: one more
forward pass of the decoder, ~20 % of a ViT-B step's FLOPs). Because each
term is a scalar, its gradient is its whole backward pass: computing it right
after the chunk's forward pass and keeping only the running sum (the size of
the differentiated inputs) costs neither memory nor recompute. The backward
pass then only scales that sum by the incoming cotangent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def chunked_sum_eager_grad(term: Callable[[Any, Any], tuple[jax.Array, Any]],
                           diff, chunks) -> tuple[jax.Array, Any]:
  """(sum_i term(diff, chunks[i])[0], stacked aux) with a forward-pass gradient.

  Args:
    term: (diff, chunk) -> (scalar float32 term, aux pytree). It must not
      close over traced arrays (pass them in ``diff`` or ``chunks``).
    diff: pytree of float arrays the sum is differentiated with respect to
      (``None`` leaves allowed).
    chunks: pytree of arrays with a leading chunk axis [n, ...]; not
      differentiated (integer and bool leaves allowed).
  Returns:
    (total scalar, aux stacked over chunks [n, ...]). Without differentiation
    this is a plain ``lax.map``. Under differentiation the forward pass runs a
    ``lax.scan`` that computes each term's value and gradient and carries the
    gradients' sum; the backward pass returns cotangent x that sum for
    ``diff`` and zeros for ``chunks``. ``aux`` carries no gradient (it is
    returned through ``lax.stop_gradient``).
  """

  def primal(diff, chunks):
    values, aux = jax.lax.map(lambda c: term(diff, c), chunks)
    return values.sum(), aux

  def forward(diff, chunks):
    value_and_grad = jax.value_and_grad(term, has_aux=True)

    def body(grad_sum, chunk):
      (value, aux), grad = value_and_grad(diff, chunk)
      return jax.tree_util.tree_map(jnp.add, grad_sum, grad), (value, aux)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, diff)
    grad_sum, (values, aux) = jax.lax.scan(body, zeros, chunks)
    return (values.sum(), aux), grad_sum

  def backward(grad_sum, cotangents):
    total_ct, _ = cotangents  # aux is not differentiated
    scaled = jax.tree_util.tree_map(lambda g: (total_ct * g).astype(g.dtype), grad_sum)
    return scaled, None

  run = jax.custom_vjp(primal)
  run.defvjp(forward, backward)
  total, aux = run(diff, chunks)
  return total, jax.lax.stop_gradient(aux)

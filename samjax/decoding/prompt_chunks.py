"""Prompts in sequential chunks: [B, M, ...] <-> [M / chunk, B, chunk, ...].

Both plans loop over chunks of an image's M prompts with the chunk axis
leading: the interactive plan (``prompt_chunk`` prompts per step) and the
training plan (a chunk's gradient taken in the forward pass,
``samjax.decoding.eager_grad``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def split_chunks(tree, chunk: int, axis: int = 1):
  """Every array leaf [..., M, ...] (M on ``axis``) -> [M / chunk, ..., chunk, ...];
  ``None`` leaves stay None."""
  def split(x):
    m = x.shape[axis]
    if m % chunk:
      raise ValueError(f"{m} prompts is not a multiple of prompt_chunk={chunk}")
    x = x.reshape(*x.shape[:axis], m // chunk, chunk, *x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)
  return jax.tree_util.tree_map(split, tree)


def merge_chunks(tree, axis: int = 1):
  """Inverse of ``split_chunks``: [n, ..., chunk, ...] -> [..., n * chunk, ...]."""
  def merge(x):
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:])
  return jax.tree_util.tree_map(merge, tree)


def map_prompt_chunks(fn, prompts, chunk: int):
  """``fn`` over sequential chunks of ``chunk`` of the M prompts (``lax.map``),
  outputs merged back to [..., M, ...]; ``fn(prompts)`` when ``chunk`` is 0
  or covers all M. ``prompts``: a ``Prompts`` batch [B, M, ...]."""
  if chunk and prompts.shape[1] > chunk:
    return merge_chunks(jax.lax.map(fn, split_chunks(prompts, chunk)))
  return fn(prompts)

"""Gradient accumulation: one train step's batch as sequential microbatches.

Why: at the paper's batch sizes a chip holds several images per step (ViT-H,
256 images on 64 v5p chips = 4 per chip). Traced as one program, XLA compiles
and stores activations for all of them at once: the compile on a CPU host
takes 24-28 minutes and temporaries grow with the per-chip batch. Scanning
over microbatches of one image per chip compiles the one-image program once
(the scan body) and keeps one microbatch's activations alive.

Exactness: the step's loss is a mean over the valid masks of the whole batch
(``samjax.train.losses.masked_mean``), so microbatch m's loss is weighted by
its share of the valid masks, ``W_m / W``, and the weighted gradients summed:
the result is the full batch's gradient, up to float summation order. The
metrics are combined the same way (``num_masks`` is summed).

Which images form a microbatch: the batch [B, ...] is sharded over the batch
axes in contiguous per-device blocks, so microbatch m takes images
``m, m + M, m + 2M, ...``: every device contributes its own m-th image and no
image moves between devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

# Metrics that are sums over masks, not masked means.
SUMMED_METRICS = ("num_masks",)


def resolve_microbatches(requested: int, global_batch: int, batch_shards: int,
                         shards_desc: str = "") -> int:
  """The number of microbatches per step; also the one check that the global
  batch splits over the batch shards at all.

  Args:
    requested: ``config.microbatches``: 1 = off, M > 1 = M microbatches,
      0 = one image per batch shard per microbatch (M = images per device).
    global_batch: images per step over all devices.
    batch_shards: devices the batch dimension is split over.
    shards_desc: where the shards come from (batch axes and mesh), for errors.
  Raises:
    ValueError (one line) when the batch cannot be split that way.
  """
  if requested < 0:
    raise ValueError(f"microbatches={requested}: use 0 (one image per device per "
                     "microbatch), 1 (off) or a divisor of the per-device batch")
  if global_batch % batch_shards:
    raise ValueError(f"global batch {global_batch} does not split over {batch_shards} "
                     f"batch shards{' ' + shards_desc if shards_desc else ''}")
  per_shard = global_batch // batch_shards
  m = per_shard if requested == 0 else requested
  if per_shard % m:
    raise ValueError(
        f"microbatches={m} does not divide the {per_shard} images each of the "
        f"{batch_shards} batch shards holds (global batch {global_batch}): every "
        "microbatch must give each device the same number of images")
  return m


def split_microbatches(batch: dict, num: int, sharding: NamedSharding | None = None
                       ) -> dict:
  """[B, ...] leaves -> [num, B / num, ...]; microbatch m = images m, m + num, ...

  With ``sharding`` (the batch's, dim 0 over the batch axes) each microbatch
  keeps that sharding on its own batch dimension, so every device keeps its
  own images.
  """
  stacked_sharding = None
  if sharding is not None:
    stacked_sharding = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))

  def split(x):
    b = x.shape[0]
    x = jnp.swapaxes(x.reshape(b // num, num, *x.shape[1:]), 0, 1)
    if stacked_sharding is not None:
      x = jax.lax.with_sharding_constraint(x, stacked_sharding)
    return x

  return jax.tree_util.tree_map(split, batch)


def accumulate_gradients(grad_fn, params, batch: dict, rng, num: int,
                         batch_sharding: NamedSharding | None = None,
                         grad_shardings=None):
  """Sums the gradients of ``num`` microbatches, weighted to the batch's mean.

  Args:
    grad_fn: ``(params, microbatch, rng, weight) -> (grads, metrics)``, the
      gradient of ``weight * loss(microbatch)``; metrics are masked means over
      the microbatch's valid masks (plus ``SUMMED_METRICS``).
    params: the parameters (not split).
    batch: the step's batch, leaves [B, ...]; ``batch["valid"]`` [B, K] bool.
    rng: the step's key; microbatch m uses ``fold_in(rng, m)``.
    num: microbatches (``resolve_microbatches``).
    batch_sharding: the batch's sharding (None outside a mesh).
    grad_shardings: pytree of shardings for the gradient accumulator (the
      params'), or None.
  Returns:
    (grads, metrics) of the whole batch.
  """
  valid = batch["valid"].astype(jnp.float32)
  micro = split_microbatches(batch, num, batch_sharding)
  counts = micro["valid"].astype(jnp.float32).sum(axis=tuple(range(1, valid.ndim + 1)))
  weights = counts / jnp.maximum(valid.sum(), 1.0)                  # [num]
  keys = jax.vmap(lambda m: jax.random.fold_in(rng, m))(jnp.arange(num))

  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  if grad_shardings is not None:
    zeros = jax.lax.with_sharding_constraint(zeros, grad_shardings)

  def body(acc, xs):
    mb, key, weight = xs
    grads, metrics = grad_fn(params, mb, key, weight)
    acc = jax.tree_util.tree_map(jnp.add, acc, grads)
    if grad_shardings is not None:
      acc = jax.lax.with_sharding_constraint(acc, grad_shardings)
    return acc, metrics

  grads, per_micro = jax.lax.scan(body, zeros, (micro, keys, weights))
  return grads, combine_metrics(per_micro, weights)


def combine_metrics(per_micro: dict, weights) -> dict:
  """Per-microbatch metrics [num, ...] -> the batch's: masked means weighted by
  each microbatch's share of the valid masks, ``SUMMED_METRICS`` summed."""
  def combine(name, v):
    if name in SUMMED_METRICS:
      return v.sum(axis=0)
    w = weights.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)
    return (v * w).sum(axis=0)
  return {name: combine(name, v) for name, v in per_micro.items()}

"""Logical axis names used by samjax modules, and the helper that applies them.

Modules annotate every parameter and the main activations with *logical*
axis names (MaxText style). An experiment config maps those names to mesh
axes (``data``, ``fsdp``, ``model``); outside a mesh + rules context every
annotation is a no-op, so the same model runs unsharded on one CPU.

Logical names:
  batch   leading batch axis of activations (images, or image x prompt)
  length  token / spatial axis of activations
  embed   model width (ViT width, decoder width)
  mlp     MLP hidden width
  heads   attention projection width (num_heads * head_dim)
  qkv     fused q/k/v projection width
  conv_in input channels of a convolution kernel
  norm    LayerNorm scale/bias
  rel_pos / head_dim  relative-position tables
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

# Default mapping from logical names to mesh axes: FSDP over the `fsdp` axis,
# tensor parallelism over `model`, data parallelism over `data` (+ `fsdp`).
DEFAULT_LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("qkv", "model"),
    ("conv_in", None),
    ("norm", None),
    ("rel_pos", None),
    ("head_dim", None),
    ("vocab", None),
)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Annotates an activation with logical axis names (no-op without rules)."""
  return nn.with_logical_constraint(x, tuple(names))


def param_init(init, names: Sequence[str | None]):
  """Wraps an initializer so the created parameter carries logical names."""
  return nn.with_logical_partitioning(init, tuple(names))

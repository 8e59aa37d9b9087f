"""Logical axis names used by samjax modules, and the helpers that apply them.

Modules annotate every parameter and the main activations with *logical*
axis names (MaxText style). An experiment config maps those names to mesh
axes (``data``, ``fsdp``, ``model``); outside a mesh + rules context every
annotation is a no-op, so the same model runs unsharded on one CPU.

Parameters and activations use two disjoint sets of names, so a config can
shard a weight dimension and the matching activation dimension differently
(e.g. FSDP shards the ``embed`` dimension of kernels while ``activation_embed``
stays whole). ``param_init`` only takes parameter names and ``constrain``
only activation names; each raises ``ValueError`` on a name of the other set.

Parameter names (``PARAM_AXIS_NAMES``, ``param_init``):
  embed   model width (ViT width, decoder width)
  mlp     MLP hidden width
  heads   attention projection width (num_heads * head_dim)
  qkv     fused q/k/v projection width
  conv_in input channels of a convolution kernel
  norm    LayerNorm scale/bias
  rel_pos / head_dim  relative-position tables
  vocab   embedding tables (unused by the model today)

Activation names (``ACTIVATION_AXIS_NAMES``, ``constrain``):
  activation_batch   leading batch axis (images, or image x prompt)
  activation_length  token axis of flattened image tokens
  activation_embed   channel / model-width axis

``DEFAULT_LOGICAL_RULES`` lists the parameter rules first, then the
activation rules. Flax applies rules in order and never uses a mesh axis
twice in one array, but no array mixes the two sets, so the order between
the parts does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

# Parameter rules: FSDP over the `fsdp` axis, tensor parallelism over `model`.
_PARAM_RULES: tuple[tuple[str, object], ...] = (
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

# Activation rules: data parallelism over `data` x `fsdp` (the FSDP axis also
# splits the batch, as in MaxText). Channels stay whole: with one shared
# `embed` name the `embed -> fsdp` rule was dropped for activations because
# the batch already took `fsdp`, i.e. they got None, written here explicitly.
_ACTIVATION_RULES: tuple[tuple[str, object], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
)

# The default table: parameter names, then activation names.
DEFAULT_LOGICAL_RULES: tuple[tuple[str, object], ...] = _PARAM_RULES + _ACTIVATION_RULES

PARAM_AXIS_NAMES: frozenset[str] = frozenset(name for name, _ in _PARAM_RULES)
ACTIVATION_AXIS_NAMES: frozenset[str] = frozenset(name for name, _ in _ACTIVATION_RULES)


def validate_rules(rules) -> tuple[tuple[str, object], ...]:
  """``rules`` (e.g. ``config.logical_rules``) as a tuple of pairs; raises
  ``ValueError`` on a logical name no module uses, such as the activation
  names from before the split (``batch``, ``length``): flax would ignore
  such a rule and leave the axis unsharded without a word."""
  rules = tuple(tuple(r) for r in rules)
  known = PARAM_AXIS_NAMES | ACTIVATION_AXIS_NAMES
  unknown = [r[0] for r in rules if r[0] not in known]
  if unknown:
    raise ValueError(f"logical rules name unknown axes {unknown}; parameter names are "
                     f"{sorted(PARAM_AXIS_NAMES)}, activation names "
                     f"{sorted(ACTIVATION_AXIS_NAMES)} (samjax.logical_axes)")
  return rules


def _check_names(names: tuple, forbidden: frozenset[str], what: str, allowed: frozenset[str]):
  """Raises if ``names`` uses a name of the other set (a parameter name on an
  activation, or the reverse): it would silently pick up the other's rule."""
  bad = [n for n in names if isinstance(n, str) and n in forbidden]
  if bad:
    raise ValueError(f"{what} logical axes {names} use {bad}, which name the other kind of "
                     f"axis; use one of {sorted(allowed)} (samjax.logical_axes)")


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Annotates an activation with activation logical axis names (no-op
  without rules). Raises ``ValueError`` on a parameter name."""
  names = tuple(names)
  _check_names(names, PARAM_AXIS_NAMES, "activation", ACTIVATION_AXIS_NAMES)
  return nn.with_logical_constraint(x, names)


def param_init(init, names: Sequence[str | None]):
  """Wraps an initializer so the created parameter carries parameter logical
  names. Raises ``ValueError`` on an activation name."""
  names = tuple(names)
  _check_names(names, ACTIVATION_AXIS_NAMES, "parameter", PARAM_AXIS_NAMES)
  return nn.with_logical_partitioning(init, names)

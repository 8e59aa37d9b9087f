"""Matmul FLOPs of a jitted program, counted from its jaxpr through loops.

XLA's ``cost_analysis()`` counts the body of a ``while`` loop (what
``lax.scan`` / ``lax.map`` lower to) once, whatever its trip count, so the
train step's 10 scanned decoder passes (and a scanned encoder) are
undercounted there. ``count_flops`` walks the jaxpr instead and multiplies a
``scan`` body by its ``length``.

Counted: ``dot_general`` (2 * output size * contracted size) and
``conv_general_dilated`` (2 * output size * kernel window * input features
per group; see ``conv_flops``). Elementwise ops, reductions and transcendental functions are not
counted: the usual convention for MFU, where matmuls are >95% of a ViT's
FLOPs. ``while`` loops (unknown trip count) are counted once and reported in
``FlopCount.while_loops``; ``cond`` counts its most expensive branch;
``shard_map`` bodies are per-shard and are multiplied by the number of
shards.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import jax
from jax.extend import core as jex_core

_Jaxpr = jex_core.Jaxpr
_ClosedJaxpr = jex_core.ClosedJaxpr


@dataclasses.dataclass
class FlopCount:
  """FLOPs of one call of a program (all devices together).

  Attributes:
    total: matmul + convolution FLOPs (multiply-add = 2 FLOPs).
    by_primitive: total split by primitive name.
    while_loops: ``while`` loops met (each body counted once: its trip count
      is not known from the jaxpr).
    unknown_calls: primitives with a body the counter cannot see into
      (e.g. ``pallas_call``), by name; their FLOPs are missing.
  """
  total: float = 0.0
  by_primitive: dict = dataclasses.field(default_factory=dict)
  while_loops: int = 0
  unknown_calls: dict = dataclasses.field(default_factory=dict)

  @property
  def exact(self) -> bool:
    """True when no loop or opaque call made the count a lower bound."""
    return not self.while_loops and not self.unknown_calls

  def to_dict(self) -> dict:
    return {"total": self.total, "by_primitive": dict(self.by_primitive),
            "while_loops": self.while_loops, "unknown_calls": dict(self.unknown_calls),
            "exact": self.exact}


def dot_general_flops(lhs_shape, rhs_shape, dimension_numbers) -> float:
  """2 * batch * lhs-free * rhs-free * contracted."""
  (lc, rc), (lb, rb) = dimension_numbers
  contract = math.prod(lhs_shape[i] for i in lc)
  batch = math.prod(lhs_shape[i] for i in lb)
  lhs_free = math.prod(d for i, d in enumerate(lhs_shape) if i not in lc and i not in lb)
  rhs_free = math.prod(d for i, d in enumerate(rhs_shape) if i not in rc and i not in rb)
  return 2.0 * batch * lhs_free * rhs_free * contract


def conv_flops(out_shape, rhs_shape, dimension_numbers, lhs_dilation=None) -> float:
  """2 * output size * (kernel window * kernel input features) / lhs dilation.

  The kernel's input-feature dimension already holds C_in / groups, so
  ``prod(rhs) / rhs_out_features`` is the multiply-adds of one output value
  (also for the batch-grouped convolutions of weight gradients). A
  transposed convolution (``lhs_dilation`` s) puts s-1 zeros between input
  values; only 1 / prod(s) of its taps meet data, and only those are counted
  (exact when the kernel size is a multiple of the stride, as in SAM's 2x2
  stride-2 upscaling). Taps on zero padding are counted (XLA does not
  count them, so it reports a little less for padded convolutions).
  """
  out_feature_dim = dimension_numbers.rhs_spec[0]
  per_output = math.prod(rhs_shape) / rhs_shape[out_feature_dim]
  dilation = math.prod(lhs_dilation) if lhs_dilation else 1
  return 2.0 * math.prod(out_shape) * per_output / dilation


def _sub_jaxprs(value):
  if isinstance(value, _ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, _Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


# Primitives whose computation is opaque to a jaxpr walk.
_OPAQUE = ("pallas_call", "custom_call", "ffi_call", "pure_callback", "io_callback")


def _walk(jaxpr: _Jaxpr, mult: float, acc: FlopCount, scans: bool = True) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      f = dot_general_flops(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape,
                            eqn.params["dimension_numbers"])
      acc.total += mult * f
      acc.by_primitive[name] = acc.by_primitive.get(name, 0.0) + mult * f
    elif name == "conv_general_dilated":
      f = conv_flops(eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape,
                     eqn.params["dimension_numbers"], eqn.params.get("lhs_dilation"))
      acc.total += mult * f
      acc.by_primitive[name] = acc.by_primitive.get(name, 0.0) + mult * f
    elif name == "scan":
      length = eqn.params["length"] if scans else 1
      _walk(eqn.params["jaxpr"].jaxpr, mult * length, acc, scans)
    elif name == "while":
      acc.while_loops += 1
      _walk(eqn.params["cond_jaxpr"].jaxpr, mult, acc, scans)
      _walk(eqn.params["body_jaxpr"].jaxpr, mult, acc, scans)
    elif name == "cond":
      # The most expensive branch: an upper bound of what runs.
      best = None
      for branch in eqn.params["branches"]:
        sub = FlopCount()
        _walk(branch.jaxpr, mult, sub, scans)
        if best is None or sub.total > best.total:
          best = sub
      if best is not None:
        _merge(acc, best)
    elif name == "shard_map":
      mesh = eqn.params.get("mesh")
      axes = eqn.params.get("manual_axes") or getattr(mesh, "axis_names", ())
      shards = math.prod(dict(mesh.shape)[a] for a in axes) if mesh is not None else 1
      _walk(_as_jaxpr(eqn.params["jaxpr"]), mult * shards, acc, scans)
    elif name in _OPAQUE:
      acc.unknown_calls[name] = acc.unknown_calls.get(name, 0) + 1
    else:
      # pjit, remat (checkpoint), custom_jvp/vjp calls, closed_call, ...:
      # every sub-jaxpr runs once per call.
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          _walk(sub, mult, acc, scans)


def _as_jaxpr(j):
  return j.jaxpr if isinstance(j, _ClosedJaxpr) else j


def _merge(acc: FlopCount, other: FlopCount) -> None:
  acc.total += other.total
  for k, v in other.by_primitive.items():
    acc.by_primitive[k] = acc.by_primitive.get(k, 0.0) + v
  acc.while_loops += other.while_loops
  for k, v in other.unknown_calls.items():
    acc.unknown_calls[k] = acc.unknown_calls.get(k, 0) + v


def count_jaxpr_flops(closed_jaxpr, scan_lengths: bool = True) -> FlopCount:
  """``FlopCount`` of a (closed) jaxpr.

  ``scan_lengths=False`` counts every scan body once, as XLA's cost
  analysis does (to compare with it, or to scale its numbers).
  """
  acc = FlopCount()
  _walk(_as_jaxpr(closed_jaxpr), 1.0, acc, scan_lengths)
  return acc


def count_flops(fn, *args, scan_lengths: bool = True, **kwargs) -> FlopCount:
  """FLOPs of one call ``fn(*args, **kwargs)``; args may be ShapeDtypeStructs.

  Traces only (``jax.make_jaxpr``): nothing is compiled or run. For a
  sharded program trace inside the mesh context it is lowered in.
  """
  return count_jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs), scan_lengths)


def primitive_histogram(closed_jaxpr) -> dict:
  """How many eqns of each primitive (recursively; loops not multiplied):
  a quick look at what a program is made of."""
  hist = collections.Counter()

  def walk(j):
    for eqn in j.eqns:
      hist[eqn.primitive.name] += 1
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          walk(sub)
  walk(_as_jaxpr(closed_jaxpr))
  return dict(hist)

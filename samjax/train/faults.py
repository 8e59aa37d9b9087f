"""Fault injection for crash tests, driven by the environment, never by configs.

``SAMJAX_FAULT_KILL_AT_STEP=N``: after step N (once its checkpoint, if any,
is on disk) the process SIGKILLs itself, like a preempted VM: no cleanup,
no finally blocks. Tests use it to prove exact resume; production runs never
set it.

``SAMJAX_FAULT_SIGTERM_AT_STEP=N``: after step N the process sends itself
SIGTERM, a preemption notice (set it for one process of a multi-process run
to test that all of them save the same step). ``SAMJAX_FAULT_SIGINT_AT_STEP``:
the same with SIGINT (a Ctrl-C).

``SAMJAX_FAULT_NAN_PARAMS_AT_STEP=N``: the parameters coming out of step N
turn NaN, as after a diverged update: tests that a non-finite state is never
saved and the run stops, without compiling a divergent program (a NaN
learning rate, say, is a compile-time constant and costs a new compile).
"""

from __future__ import annotations

import os
import signal

KILL_AT_STEP = "SAMJAX_FAULT_KILL_AT_STEP"
SIGTERM_AT_STEP = "SAMJAX_FAULT_SIGTERM_AT_STEP"
SIGINT_AT_STEP = "SAMJAX_FAULT_SIGINT_AT_STEP"
NAN_PARAMS_AT_STEP = "SAMJAX_FAULT_NAN_PARAMS_AT_STEP"


def _step_from_env(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  return int(value) if value else None


def maybe_inject(step: int, flush=lambda: None) -> None:
  """SIGKILL, SIGTERM or SIGINT this process if ``step`` is a requested fault step."""
  if _step_from_env(SIGTERM_AT_STEP) == step:
    os.kill(os.getpid(), signal.SIGTERM)
  if _step_from_env(SIGINT_AT_STEP) == step:
    os.kill(os.getpid(), signal.SIGINT)
  if _step_from_env(KILL_AT_STEP) == step:
    flush()
    os.kill(os.getpid(), signal.SIGKILL)


def maybe_poison_params(step: int, state: dict) -> dict:
  """``state`` with its first parameter leaf all NaN if ``step`` is the
  requested step (one bad leaf is what a diverged update looks like to the
  checks); otherwise ``state`` unchanged."""
  if _step_from_env(NAN_PARAMS_AT_STEP) != step:
    return state
  import jax
  import jax.numpy as jnp
  leaves, treedef = jax.tree_util.tree_flatten(state["params"])
  leaves[0] = leaves[0] * jnp.nan  # keeps the leaf's sharding
  return {**state, "params": jax.tree_util.tree_unflatten(treedef, leaves)}

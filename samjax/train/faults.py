"""Fault injection for crash tests, driven by the environment, never by configs.

``SAMJAX_FAULT_KILL_AT_STEP=N``: after step N (once its checkpoint, if any,
is on disk) the process SIGKILLs itself, like a preempted VM: no cleanup,
no finally blocks. Tests use it to prove exact resume; production runs never
set it.

``SAMJAX_FAULT_SIGTERM_AT_STEP=N``: after step N the process sends itself
SIGTERM, a preemption notice (set it for one process of a multi-process run
to test that all of them save the same step). ``SAMJAX_FAULT_SIGINT_AT_STEP``:
the same with SIGINT (a Ctrl-C).
"""

from __future__ import annotations

import os
import signal

KILL_AT_STEP = "SAMJAX_FAULT_KILL_AT_STEP"
SIGTERM_AT_STEP = "SAMJAX_FAULT_SIGTERM_AT_STEP"
SIGINT_AT_STEP = "SAMJAX_FAULT_SIGINT_AT_STEP"


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

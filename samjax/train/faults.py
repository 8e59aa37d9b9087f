"""Fault injection for crash tests, driven by the environment, never by configs.

``SAMJAX_FAULT_KILL_AT_STEP=N``: after step N (once its checkpoint, if any,
is on disk) the process SIGKILLs itself, like a preempted VM: no cleanup,
no finally blocks. Tests use it to prove exact resume; production runs never
set it.
"""

from __future__ import annotations

import os
import signal

KILL_AT_STEP = "SAMJAX_FAULT_KILL_AT_STEP"


def kill_step() -> int | None:
  value = os.environ.get(KILL_AT_STEP, "").strip()
  return int(value) if value else None


def maybe_kill(step: int, flush=lambda: None) -> None:
  """SIGKILL this process if ``step`` is the requested fault step."""
  if kill_step() == step:
    flush()
    os.kill(os.getpid(), signal.SIGKILL)

"""Preemption decided collectively: every process saves at the same step.

A pod job gets a preemption notice (SIGTERM) on one host or on all of them,
at slightly different times. If each host reacted on its own, they would
save at different steps (or one would wait forever in a collective the
others left). With several processes, jax's preemption sync manager (started
by ``jax.distributed.initialize``, listening for SIGTERM itself) propagates
the notice through the coordination service and agrees on one step: the
largest step any process has reached, plus one. ``reached(step)`` must be
called at every step by every process; it turns True at that agreed step on
all of them at once.

With one process, a Python SIGTERM handler sets a flag and the next step
boundary saves.

Ctrl-C (SIGINT) is a preemption notice too: the checkpoint is written at the
next step boundary instead of being abandoned mid-write. A second Ctrl-C
interrupts at once (KeyboardInterrupt), for a run that must stop now.
"""

from __future__ import annotations

import os
import signal

import jax


def _distributed_client():
  from jax._src import distributed  # the only handle on the runtime client
  return distributed.global_state.client


class PreemptionWatch:
  """``reached(step)``: True when this run must save at ``step`` and stop."""

  def __init__(self):
    self.collective = jax.process_count() > 1 and _distributed_client() is not None
    self._signalled = False
    if not self.collective:
      # Several processes: no Python SIGTERM handler, it would replace the
      # sync manager's own and leave the other hosts running.
      signal.signal(signal.SIGTERM, self._on_sigterm)
    signal.signal(signal.SIGINT, self._on_sigint)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._signalled = True

  def _on_sigint(self, signum, frame):
    print("[train] Ctrl-C: saving at the next step boundary (again to abort now)",
          flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if self.collective:  # hand it to the sync manager, which listens for SIGTERM
      os.kill(os.getpid(), signal.SIGTERM)
    else:
      self._on_sigterm(signum, frame)

  def restore_default_handlers(self) -> None:
    """After the run: Ctrl-C and SIGTERM act as usual again."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not self.collective:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)

  def reached(self, step: int) -> bool:
    if self.collective:
      from jax.experimental import multihost_utils
      return bool(multihost_utils.reached_preemption_sync_point(int(step)))
    return self._signalled

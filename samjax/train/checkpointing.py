"""Saving and resuming the train state and the grain iterator (orbax).

Opening a workdir's checkpoints and reading params is
``samjax.checkpoints.workdir`` (shared with ``load_sam``); this adds what
training needs. Resuming takes the newest step that restores: a step with a
missing, truncated or corrupt file is reported in one line (step and reason)
and skipped. Steps newer than the one resumed from are moved aside to
``WORKDIR/checkpoints_unrestorable/`` (never deleted) so the run can save
those step numbers again; if no step restores, nothing is moved and the run
stops with every step's reason. On a bucket, moving a step aside is a copy
then a delete (``storage.move_tree``).

Layout (see ``samjax.formats``): WORKDIR/checkpoints/<step>/{state, data}. ``state`` is the plain
state pytree (restorable onto any mesh: targets carry the new shardings);
``data`` is the grain iterator state of each process, so a resumed run sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from data_pipelines import storage
from samjax import formats
from samjax.checkpoints import orbax_orphans
from samjax.checkpoints.workdir import (
  NoRestorableCheckpointError,
  WorkdirCheckpoints,
  one_line_reason,
)


def _grain_iterator(it):
  """The grain iterator behind a global-batch wrapper (grain's checkpoint
  handler only knows its own iterator types)."""
  return getattr(it, "pipeline_iterator", it)


def _all_processes_ok(ok: bool) -> bool:
  """True only if ``ok`` on every process (a restore must not succeed on one
  host and fall back on another)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


# Orbax splits the writing of a replicated array across its replicas, each
# replica writing 1/R of it; every such slice is a device op compiled once per
# shape (a tiny model's first save compiled 256 of them, ~11 s on 2 CPU
# cores). Below this size per replica the split saves nothing worth that.
MIN_REPLICA_PARALLEL_SLICE_BYTES = 256 * 1024


def _configure_array_writes() -> None:
  """Replica-parallel writes only for slices of at least
  ``MIN_REPLICA_PARALLEL_SLICE_BYTES`` (orbax's handler for jax.Array is
  process-global; everything else keeps orbax's defaults)."""
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(handler, "_min_slice_bytes_for_replica_parallel", None):
    return
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES),
      override=True)


class Checkpointer(WorkdirCheckpoints):
  """A workdir's checkpoints as a training run saves and resumes them."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    _configure_array_writes()
    super().__init__(workdir, keep, async_save)

  def restore_newest(self, abstract_state, data_iterator, log=print):
    """(step, state) of the newest step that restores, or (None, None) when
    there is no checkpoint. Raises NoRestorableCheckpointError (one line per
    step) when checkpoints exist and none restores."""
    failures = []
    for step in reversed(self.all_steps()):
      try:
        state, reason = self.restore(step, abstract_state, data_iterator), None
      except Exception as e:  # any unreadable file: try the step before
        state, reason = None, one_line_reason(e)
      if reason is not None:  # outside the except: ``e`` no longer holds the orphans
        orbax_orphans.after_failed_restore()
      if _all_processes_ok(reason is None):
        self._move_aside([s for s in self.all_steps() if s > step], log)
        return step, state
      failures.append(f"step {step}: {reason or 'failed on another process'}")
      log(f"[checkpoint] {failures[-1]}; trying the previous step")
    if failures:
      raise NoRestorableCheckpointError(
          f"no checkpoint in {self.directory} restores with this config: "
          + "; ".join(failures))
    return None, None

  def _move_aside(self, steps: list[int], log) -> None:
    """Unrestorable steps newer than the resumed one leave the manager's folder
    (process 0 moves them) so their step numbers can be saved again."""
    if not steps:
      return
    if jax.process_index() == 0:
      aside = storage.join(self.workdir, formats.UNRESTORABLE_CHECKPOINTS)
      storage.makedirs(aside)
      for step in steps:
        dest = storage.join(aside, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        storage.move_tree(storage.join(self.directory, str(step)), dest)
        log(f"[checkpoint] moved unrestorable step {step} to {dest}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("samjax_checkpoint_move_aside")
    self.reopen()

  def save(self, step: int, state, data_iterator, force: bool = False) -> bool:
    args = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(_grain_iterator(data_iterator))
    return self.manager.save(int(step), args=ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, data_iterator):
    """Restores onto the shardings carried by ``abstract_state`` (ShapeDtypeStructs)."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(_grain_iterator(data_iterator))
    out = self.manager.restore(int(step), args=ocp.args.Composite(**args))
    return out["state"]

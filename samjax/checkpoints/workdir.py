"""A training workdir's orbax checkpoints: opened, listed, and read for params.

``WorkdirCheckpoints`` is what reading a workdir needs (``load_sam`` of a
workdir reads its params); ``samjax.train.checkpointing.Checkpointer`` adds
saving and resuming the whole train state on top. A step with a missing,
truncated or corrupt file is reported in one line (step and reason) and the
step before it is tried; nothing is moved or deleted here.

The workdir may be local or ``gs://`` (orbax writes through tensorstore and
marks a finished step with ``commit_success.txt`` there); ``s3://`` is
refused in one line (``storage.check_checkpoint_location``).

Each step holds the items ``state`` (the train state pytree {"step",
"params", "opt_state", "rng"}) and ``data`` (each process's grain iterator
position).
"""

from __future__ import annotations

import orbax.checkpoint as ocp

from data_pipelines import storage
from samjax import formats
from samjax.checkpoints import orbax_orphans

ITEMS = ("state", "data")


class NoRestorableCheckpointError(RuntimeError):
  pass


def one_line_reason(e: BaseException) -> str:
  """One line out of an exception (TensorStore's run to dozens of lines): its
  root cause, which names the array and the file (orbax's wrapper only
  repeats a slice and a TensorStore spec)."""
  while e.__cause__ is not None:
    e = e.__cause__
  first = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {first[:300]}"


def _forget_cached_listings(path: str) -> None:
  """On a bucket, orbax lists and checks steps through etils.epath's fsspec
  backend: one gcsfs instance per process, with a listings cache that never
  sees objects moved through ``storage``'s own client. Without this, a step
  moved aside still "exists" for orbax and saving that step again fails."""
  if storage.is_remote(path):
    from etils.epath import backend
    backend.fsspec_backend.fs(path).invalidate_cache()


class WorkdirCheckpoints:
  """The orbax ``CheckpointManager`` of ``WORKDIR/checkpoints``.

  Args:
    workdir: local or ``gs://`` training workdir.
    keep: newest steps kept when saving (orbax ``max_to_keep``).
    async_save: saves return before the files are written.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = storage.resolve(workdir)
    # orbax gets the resolved location; s3:// is refused here in one line.
    self.directory = storage.check_checkpoint_location(formats.checkpoints_dir(workdir))
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save)
    self.manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(self.directory, options=self._options, item_names=ITEMS)

  def reopen(self) -> None:
    """A fresh manager, after steps were moved outside orbax (its step list
    and, on a bucket, the file listings it caches are stale)."""
    _forget_cached_listings(self.directory)
    self.manager.close()
    self.manager = self._open()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self):
    return self.manager.latest_step()

  def restore_params(self, step: int | None = None, log=print):
    """Just the params of a checkpoint (for inference), host numpy arrays: of
    ``step``, or of the newest step that restores (corrupt ones reported and
    skipped, never moved or deleted)."""
    steps = [step] if step is not None else list(reversed(self.all_steps()))
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    failures = []
    for s in steps:
      try:
        out = self.manager.restore(int(s), args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))
        return out["state"]["params"]
      except Exception as e:  # an unreadable step: the one before may be fine
        reason = one_line_reason(e)
      # Outside the except: ``e`` no longer holds the orphaned reads.
      orbax_orphans.after_failed_restore()
      failures.append(f"step {s}: {reason}")
      log(f"[checkpoint] {self.directory} step {s} does not restore ({reason})")
    raise NoRestorableCheckpointError(
        f"no checkpoint in {self.directory} restores: " + "; ".join(failures))

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

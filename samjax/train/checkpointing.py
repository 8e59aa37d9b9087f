"""Orbax checkpoints of the train state and the grain iterator, with preemption saves.

Layout (see ``samjax.formats``): WORKDIR/checkpoints/<step>/{state, data}. ``state`` is the plain
state pytree (restorable onto any mesh: targets carry the new shardings);
``data`` is the grain iterator state of each process, so a resumed run sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import signal

import grain
import orbax.checkpoint as ocp

from samjax import formats


def _grain_iterator(it):
  """The grain iterator behind a global-batch wrapper (grain's checkpoint
  handler only knows its own iterator types)."""
  return getattr(it, "pipeline_iterator", it)


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = formats.checkpoints_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))
    self.preempted = False

  def latest_step(self):
    return self.manager.latest_step()

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

  def restore_params(self, step: int | None = None):
    """Just the params of a checkpoint (for inference), host numpy arrays."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self.manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
    return out["state"]["params"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

  def install_preemption_handler(self):
    """SIGTERM (preemption notice) -> save at the next step boundary, then stop."""
    def handler(signum, frame):
      del signum, frame
      self.preempted = True
    signal.signal(signal.SIGTERM, handler)

"""Per-process numpy batches -> global ``jax.Array``s sharded over the batch axes.

On a pod each JAX process runs its own pipeline (``process_index`` /
``process_count`` in ``PipelineConfig``) and holds ``B_local`` examples; the
global batch is ``B_local * process_count`` examples, sharded along dim 0
over the mesh's batch axes (e.g. ``("data",)`` or ``("data", "fsdp")``) and
replicated over the others (e.g. ``"model"``).
``jax.make_array_from_process_local_data`` places each process's rows on its
own devices without any cross-host transfer.

jax (and ``samjax.mesh``, for the batch sharding the train step uses too)
is imported lazily so spawned data workers never load it.
"""

from __future__ import annotations

import numpy as np

# Host-side bookkeeping, not model inputs: kept out of the global arrays.
HOST_ONLY = ("num_skipped",)


def to_global(batch: dict[str, np.ndarray], mesh, batch_axes=("data",),
              keys=None) -> dict:
  """{name: (B_local, ...) numpy} -> {name: (B_local * process_count, ...) jax.Array}.

  ``B_local`` must be divisible by the number of this process's devices
  along the batch axes. ``keys`` (default: all but host-only ones) selects
  what becomes a global array.
  """
  import jax

  from samjax.mesh import batch_sharding
  sharding = batch_sharding(mesh, batch_axes)
  keys = [k for k in batch if k not in HOST_ONLY] if keys is None else keys
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
          for k in keys}


class GlobalBatchIterator:
  """Wraps a pipeline iterator: yields global jax.Array batches.

  ``get_state()/set_state()`` pass through to the grain iterator (save them
  with the model checkpoint); ``records_skipped`` counts bad records dropped
  so far in this process. ``keys`` limits the global arrays to what the
  consumer reads (the train step takes a fixed set).
  """

  def __init__(self, it, mesh, batch_axes=("data",), keys=None):
    self._it = it
    self.mesh = mesh
    self.batch_axes = tuple(batch_axes)
    self.keys = None if keys is None else tuple(keys)
    self.records_skipped = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self.records_skipped += int(np.sum(batch.get("num_skipped", 0)))
    return to_global(batch, self.mesh, self.batch_axes, self.keys)

  @property
  def pipeline_iterator(self):
    """The wrapped per-process grain iterator (what checkpoints save)."""
    return self._it

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def make_global_iterator(cfg, mesh, batch_axes=("data",)) -> GlobalBatchIterator:
  """``pipeline.make_iterator`` for this JAX process + global assembly.

  ``cfg.batch_size`` is the *per-process* batch; process index/count are
  taken from jax (overriding the config's).
  """
  import dataclasses

  import jax

  from data_pipelines import pipeline
  cfg = dataclasses.replace(cfg, process_index=jax.process_index(),
                            process_count=jax.process_count())
  return GlobalBatchIterator(pipeline.make_iterator(cfg), mesh, batch_axes)

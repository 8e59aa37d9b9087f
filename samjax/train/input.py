"""The training run's input: pipeline configs and global-batch iterators.

Each JAX process reads its own slice of the converted TFRecords (grain,
``data_pipelines.pipeline``) with ``batch_size / process_count`` examples
per batch; ``data_pipelines.global_batch`` assembles them into global
``jax.Array``s over the mesh's batch axes without cross-host copies.
"""

from __future__ import annotations

import jax

from data_pipelines.global_batch import GlobalBatchIterator
from data_pipelines.pipeline import PipelineConfig, make_iterator
from samjax.train.setup import BATCH_KEYS


def pipeline_config(config, model, data_dir: str, global_batch: int, seed: int,
                    shuffle: bool = True, num_epochs: int | None = None,
                    max_masks: int | None = None) -> PipelineConfig:
  """This process's ``PipelineConfig`` for a global batch of ``global_batch``."""
  if global_batch % jax.process_count():
    raise ValueError(f"batch size {global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  return PipelineConfig(
      data_dir=data_dir, batch_size=global_batch // jax.process_count(),
      image_size=model.config.image_size, gt_size=model.config.mask_input_size,
      max_masks=max_masks or config.data.max_masks, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=config.data.worker_count)


def _batch_axes(sharding) -> tuple:
  axes = sharding.spec[0]
  return tuple(axes) if isinstance(axes, tuple) else (axes,)


def global_iterator(program, cfg: PipelineConfig) -> GlobalBatchIterator:
  """Global batches of ``BATCH_KEYS`` in the program's batch sharding; the
  iterator counts the bad records the pipeline skipped
  (``records_skipped``) and checkpoints its position (``get_state``)."""
  return GlobalBatchIterator(make_iterator(cfg), program.mesh,
                             _batch_axes(program.batch_sharding), keys=BATCH_KEYS)


def train_iterator(program) -> GlobalBatchIterator:
  config = program.config
  return global_iterator(program, pipeline_config(
      config, program.model, config.data.train_dir, config.data.batch_size,
      seed=config.seed))


def eval_iterator(program) -> GlobalBatchIterator | None:
  """One pass over the held-out set with fixed order; None without eval_dir."""
  config = program.config
  if not config.data.eval_dir:
    return None
  return global_iterator(program, pipeline_config(
      config, program.model, config.data.eval_dir, config.data.eval_batch_size, seed=0,
      shuffle=False, num_epochs=1,
      # The held-out masks stay fixed when training's K changes.
      max_masks=config.data.eval_max_masks))

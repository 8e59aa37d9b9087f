"""The training run's input: pipeline configs and global-batch iterators.

Each JAX process reads its own slice of the converted TFRecords (grain,
``data_pipelines.pipeline``) with ``batch_size / process_count`` examples
per batch; ``data_pipelines.global_batch`` assembles them into global
``jax.Array``s over the mesh's batch axes without cross-host copies.
``config.data.source`` picks the records: "samjax" (``data.train_dir`` /
``data.eval_dir``) or a TFDS-prepared SA-1B ("tfds:segment_anything":
``data.tfds_data_dir``, splits ``data.tfds_train_split`` /
``data.tfds_eval_split``; docs/data_tfds.md).
"""

from __future__ import annotations

import jax

from data_pipelines.global_batch import GlobalBatchIterator
from data_pipelines.pipeline import PipelineConfig, make_iterator
from samjax.configs.schema import check_data_source
from samjax.train.setup import BATCH_KEYS


def pipeline_config(config, model, data_dir: str, global_batch: int, seed: int,
                    shuffle: bool = True, num_epochs: int | None = None,
                    max_masks: int | None = None, split: str = "train") -> PipelineConfig:
  """This process's ``PipelineConfig`` for a global batch of ``global_batch``.

  ``data_dir`` (and ``split``) as ``PipelineConfig`` reads them for
  ``config.data.source``."""
  if global_batch % jax.process_count():
    raise ValueError(f"batch size {global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  return PipelineConfig(
      data_dir=data_dir, batch_size=global_batch // jax.process_count(),
      image_size=model.config.image_size, gt_size=model.config.mask_input_size,
      max_masks=max_masks or config.data.max_masks, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=config.data.worker_count,
      read_threads=config.data.read_threads or None,
      source=config.data.source, split=split)


def _location(config, held_out: bool) -> tuple[str, str] | None:
  """(data_dir, split) of the training or held-out records for the configured
  source; None when there is no held-out set."""
  spec = check_data_source(config)
  d = config.data
  if spec.kind == "samjax":
    where = d.eval_dir if held_out else d.train_dir
    return (where, "train") if where else None
  split = d.tfds_eval_split if held_out else d.tfds_train_split
  return (d.tfds_data_dir, split) if split else None


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
  data_dir, split = _location(config, held_out=False) or (config.data.train_dir, "train")
  return global_iterator(program, pipeline_config(
      config, program.model, data_dir, config.data.batch_size,
      seed=config.seed, split=split))


def eval_iterator(program) -> GlobalBatchIterator | None:
  """One pass over the held-out set with fixed order; None without eval_dir
  (tfds sources: without tfds_eval_split)."""
  config = program.config
  where = _location(config, held_out=True)
  if where is None:
    return None
  data_dir, split = where
  return global_iterator(program, pipeline_config(
      config, program.model, data_dir, config.data.eval_batch_size, seed=0,
      shuffle=False, num_epochs=1,
      # The held-out masks stay fixed when training's K changes.
      max_masks=config.data.eval_max_masks, split=split))

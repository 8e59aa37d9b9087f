"""The SA-1B grain input pipeline: converted TFRecords -> fixed-shape numpy batches.

::

  TFRecordSource (random access via the offset index; or TFDSSource,
                  a TFDS-prepared SA-1B, ``source="tfds:segment_anything"``)
    -> tag with source index       (names bad records in errors)
    -> global shuffle by seed      (a new permutation every epoch)
    -> this process's slice        [process_index::process_count], equal lengths
    -> repeat                      (num_epochs, None = forever)
    -> decode (+ resize) + sample K masks at G x G, unpadded  (decode.py, per-index RNG)
    -> to_iter_dataset             (read threads: records read and decoded at once)
    -> SkipErrors                  (drop bad records, count them into the batch)
    -> PadBatch                    (batch_size per process, padded in place, drop remainder)
    -> mp_prefetch                 (worker processes; 0 = in process)

Batches are dicts of numpy arrays with a leading per-process batch dimension
(shapes in decode.py) plus ``num_skipped`` (B,) int32: how many bad records
were dropped just before each example. The iterator supports
``get_state()/set_state()``: restoring gives exactly the next batch.
``global_batch.py`` turns batches into globally sharded ``jax.Array``s.

Per-host slicing happens on the *shuffled* order, so within an epoch the
processes read disjoint records whose union is the epoch (minus at most
``process_count - 1`` records, dropped so every process has the same count).

Reading from a bucket (``data_dir`` ``gs://...`` / ``s3://...``): each record
is one byte-range request that waits tens of ms for the store, during which
the thread reading it decodes nothing. ``read_threads`` (records in flight
per process, or per worker with ``worker_count``) therefore defaults to
``REMOTE_READ_THREADS`` for a bucket and ``LOCAL_READ_THREADS`` for a local
disk; experiments/bench_data_bucket.py measures the choice (with 50 ms added
to every request: images/s per read_threads setting, and against local disk).
A record the store cannot deliver even after ``storage``'s retries stops the
iterator with ``storage.StorageError`` naming it; only records that arrive
corrupt are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np

from data_pipelines import batching, storage, tfds_source
from data_pipelines import decode as decode_lib
from data_pipelines.grain_source import ReadError, TFRecordSource

log = logging.getLogger(__name__)

# Default ``read_threads`` (the module docstring; PipelineConfig.num_read_threads).
LOCAL_READ_THREADS = 2
REMOTE_READ_THREADS = 16


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Everything that defines the stream of batches (same config -> same batches)."""
  # source "samjax": the output directory of `samjax data convert`;
  # "tfds:NAME[:VERSION]": the TFDS data_dir it was prepared in ("" = TFDS's default).
  data_dir: str
  batch_size: int                   # per process
  image_size: int = 1024            # S
  gt_size: int = 256                # G
  max_masks: int = 64               # K
  max_mask_area: float = 0.9
  reduced_decode: bool = True
  resize_filter: str = "bilinear"   # see decode.DecodeConfig
  use_train_copy: bool = True       # read stored training-resolution copies when they fit
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None     # None: repeat forever
  process_index: int = 0
  process_count: int = 1
  worker_count: int = 0             # mp_prefetch processes (0: decode in this process)
  worker_buffer_size: int = 2       # batches buffered per worker
  # Records read + decoded at once per process/worker; None: LOCAL_READ_THREADS
  # for a local data_dir, REMOTE_READ_THREADS for gs:// / s3:// (requests wait
  # tens of ms there, so more must be in flight).
  read_threads: int | None = None
  check_crc: bool = True
  # Where records come from (``tfds_source.parse_source``): "samjax" or
  # "tfds:NAME[:VERSION]"; the rest of the pipeline is the same for both.
  source: str = "samjax"
  split: str = "train"              # the TFDS split (tfds sources only)

  def num_read_threads(self) -> int:
    """``read_threads``, or its default for where ``data_dir`` is."""
    if self.read_threads is not None:
      return self.read_threads
    return REMOTE_READ_THREADS if storage.is_remote(self.data_dir) else LOCAL_READ_THREADS

  def decode_config(self) -> decode_lib.DecodeConfig:
    return decode_lib.DecodeConfig(self.image_size, self.gt_size, self.max_masks,
                                   self.max_mask_area, self.reduced_decode,
                                   self.resize_filter, self.use_train_copy)


@dataclasses.dataclass(frozen=True)
class _Tag:
  """Pairs each record with its source index (grain may pass index >= len)."""
  num_records: int

  def __call__(self, index, data):
    return index % self.num_records, data


class _SkipErrorsIterator(grain.DatasetIterator):
  """Drops ``ReadError`` elements, logging each and counting them into the next."""

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)

  def __next__(self):
    skipped = 0
    while True:
      x = next(self._parent)
      if not isinstance(x, ReadError):
        x["num_skipped"] = np.int32(skipped)
        return x
      skipped += 1
      log.warning("skipping bad record %s: %s", x.where, x.reason)

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class SkipErrors(grain.IterDataset):
  """Bad records are skipped and counted (``num_skipped``), never fatal."""

  def __iter__(self):
    return _SkipErrorsIterator(self._parent.__iter__())


def _ensure_flags_parsed() -> None:
  """grain's mp_prefetch reads absl flags; outside an absl app they are unparsed."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def open_source(cfg: PipelineConfig) -> TFRecordSource | tfds_source.TFDSSource:
  """The random-access record source ``cfg.source`` names (ValueError if unknown)."""
  spec = tfds_source.parse_source(cfg.source)
  if spec.kind == tfds_source.SAMJAX:
    return TFRecordSource(cfg.data_dir, check_crc=cfg.check_crc)
  return tfds_source.TFDSSource(spec.tfds_name, cfg.split, cfg.data_dir)


def make_map_dataset(cfg: PipelineConfig, source: TFRecordSource | None = None
                     ) -> grain.MapDataset:
  """Everything up to and including decode, as a random-access MapDataset.

  Elements are ``decode.decode_compact`` dicts (unpadded) or ``ReadError``s.
  """
  if not 0 <= cfg.process_index < cfg.process_count:
    raise ValueError(f"process_index {cfg.process_index} outside [0, {cfg.process_count})")
  source = source or open_source(cfg)
  n = len(source)
  per_process = n // cfg.process_count
  if per_process == 0:
    what = cfg.data_dir if cfg.source == tfds_source.SAMJAX else repr(source)
    raise ValueError(f"{what}: {n} records cannot feed {cfg.process_count} processes")
  ds = grain.MapDataset.source(source).map_with_index(_Tag(n))
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds[cfg.process_index:per_process * cfg.process_count:cfg.process_count]
  if cfg.num_epochs != 1:
    ds = ds.repeat(cfg.num_epochs)
  decode = decode_lib.SA1BDecode(cfg.decode_config(), source.paths, source.starts)
  return ds.random_map(decode, seed=cfg.seed)


def make_dataset(cfg: PipelineConfig, source: TFRecordSource | None = None
                 ) -> grain.IterDataset:
  """The full pipeline (see module docstring) as a grain IterDataset."""
  ds = make_map_dataset(cfg, source)
  threads = cfg.num_read_threads()
  # grain keeps at most prefetch_buffer_size records in flight, whatever the
  # thread count: the buffer must hold one per thread.
  read = grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=max(threads, 2 * cfg.batch_size))
  ds = SkipErrors(ds.to_iter_dataset(read))
  ds = batching.PadBatch(ds, cfg.batch_size, cfg.decode_config())
  if cfg.worker_count > 0:
    _ensure_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size))
  return ds


def make_iterator(cfg: PipelineConfig) -> grain.DatasetIterator:
  """Iterator of per-process numpy batches with ``get_state()/set_state()``."""
  return iter(make_dataset(cfg))

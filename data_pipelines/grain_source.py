"""Random access over converted TFRecord shards (a grain data source).

``TFRecordSource(dir)[i]`` returns the serialized ``tf.train.Example`` of
global record ``i`` (shards in manifest order, records in file order): one
positional read through the shard's offset index, CRC-checked. ``dir`` may
be local or on ``gs://`` / ``s3://``: there each record is one byte-range
request (``storage.read_range``, which retries transient errors), and the
pipeline keeps many in flight (``pipeline.REMOTE_READ_THREADS``).

Two kinds of failure, kept apart:

* a record whose bytes arrived but do not check out (CRC, framing, a short
  read of a truncated file) comes back as a ``ReadError`` instead of raising,
  so the pipeline skips and counts it (``num_skipped``);
* a record that cannot be read at all (the shard is gone, the store keeps
  failing after the retries, no permission) raises ``storage.StorageError``
  naming the shard and record: the run stops in one line rather than
  silently training on less data.

Pickles as plain data (grain spawns worker processes); each process opens
its own storage clients.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses

import numpy as np

from data_pipelines import dataset_layout, storage, tfrecord

# Index files read at once when a source opens: SA-1B has 1000 shards, and a
# bucket answers each read in tens of ms (1000 sequential reads: ~1 min).
INDEX_THREADS = 32


@dataclasses.dataclass(frozen=True)
class ReadError:
  """Stands in for a record that could not be read or decoded."""
  where: str   # "<shard path>#<record index>"
  reason: str


def locate(paths: list[str], starts: np.ndarray, index: int) -> tuple[str, int]:
  """(shard path, record number in it) of global record ``index``."""
  k = int(np.searchsorted(starts, index, "right")) - 1
  return paths[k], int(index - starts[k])


def _read_index(path: str, entry: dict) -> np.ndarray:
  idx = tfrecord.read_index(tfrecord.index_path(path))
  if len(idx) != entry["num_records"]:
    raise ValueError(f"{path}.idx has {len(idx)} rows, manifest.json says "
                     f"{entry['num_records']}: rerun `samjax data convert`")
  return idx


class TFRecordSource:
  """``len()`` and ``[i] -> bytes | ReadError`` over a converted directory.

  Args:
    data_dir: output directory of ``samjax data convert`` (has manifest.json),
      local or ``gs://`` / ``s3://``.
    check_crc: verify each frame's masked CRC32C (cheap with google_crc32c).
  """

  def __init__(self, data_dir: str, check_crc: bool = True):
    manifest = dataset_layout.load_manifest(data_dir)
    self.data_dir = data_dir
    self.check_crc = check_crc
    self.paths = [storage.join(data_dir, s["file"]) for s in manifest["shards"]]
    threads = max(1, min(INDEX_THREADS, len(self.paths)))
    with cf.ThreadPoolExecutor(max_workers=threads) as pool:
      indices = list(pool.map(_read_index, self.paths, manifest["shards"]))
    offsets = [idx[:, 0] for idx in indices]
    # ~12 bytes per record: 130 MB for all of SA-1B's 11M images.
    self._offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
    self._sizes = (np.concatenate([idx[:, 1] for idx in indices]).astype(np.int32)
                   if indices else np.zeros(0, np.int32))
    self.starts = np.cumsum([0] + [len(o) for o in offsets])  # (num_shards + 1,)

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, index: int) -> bytes | ReadError:
    index = int(index)
    k = int(np.searchsorted(self.starts, index, "right")) - 1
    path = self.paths[k]
    where = f"{path}#{index - self.starts[k]}"
    size = int(self._sizes[index])
    try:
      buf = storage.read_range(path, int(self._offsets[index]), size)
    except Exception as e:  # missing shard, no permission, store down
      # (the clients' own errors are not all OSErrors): not a bad record.
      if isinstance(e, FileNotFoundError):  # the client's message is a bare URL
        why = f"{path} does not exist (any more)"
      else:
        why = str(e) if isinstance(e, storage.StorageError) else f"{type(e).__name__}: {e}"
      raise storage.StorageError(
          f"record {where} cannot be read: {why.splitlines()[0] if why else ''}") from e
    if len(buf) != size:
      return ReadError(where, f"read {len(buf)} of {size} bytes (file truncated?)")
    try:
      return tfrecord.unframe(buf, where, self.check_crc)
    except tfrecord.CorruptRecordError as e:
      return ReadError(where, str(e))

  def __repr__(self) -> str:
    return f"TFRecordSource({self.data_dir!r}, {len(self)} records, {len(self.paths)} shards)"

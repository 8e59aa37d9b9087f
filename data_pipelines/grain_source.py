"""Random access over converted TFRecord shards (a grain data source).

``TFRecordSource(dir)[i]`` returns the serialized ``tf.train.Example`` of
global record ``i`` (shards in manifest order, records in file order) with
one ``os.pread`` through the shard's offset index, CRC-checked. A record that
fails its check comes back as a ``ReadError`` instead of raising, so the
pipeline can skip and count it. Pickles without its file handles (grain
spawns worker processes); each process opens the shards lazily.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import dataset_layout, tfrecord


@dataclasses.dataclass(frozen=True)
class ReadError:
  """Stands in for a record that could not be read or decoded."""
  where: str   # "<shard path>#<record index>"
  reason: str


def locate(paths: list[str], starts: np.ndarray, index: int) -> tuple[str, int]:
  """(shard path, record number in it) of global record ``index``."""
  k = int(np.searchsorted(starts, index, "right")) - 1
  return paths[k], int(index - starts[k])


class TFRecordSource:
  """``len()`` and ``[i] -> bytes | ReadError`` over a converted directory.

  Args:
    data_dir: output directory of ``samjax data convert`` (has manifest.json).
    check_crc: verify each frame's masked CRC32C (cheap with google_crc32c).
  """

  def __init__(self, data_dir: str, check_crc: bool = True):
    manifest = dataset_layout.load_manifest(data_dir)
    self.data_dir = data_dir
    self.check_crc = check_crc
    self.paths = [os.path.join(data_dir, s["file"]) for s in manifest["shards"]]
    offsets, sizes = [], []
    for path, entry in zip(self.paths, manifest["shards"]):
      idx = tfrecord.read_index(tfrecord.index_path(path))
      if len(idx) != entry["num_records"]:
        raise ValueError(f"{path}.idx has {len(idx)} rows, manifest.json says "
                         f"{entry['num_records']}: rerun `samjax data convert`")
      offsets.append(idx[:, 0])
      sizes.append(idx[:, 1].astype(np.int32))
    # ~12 bytes per record: 130 MB for all of SA-1B's 11M images.
    self._offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
    self._sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int32)
    self.starts = np.cumsum([0] + [len(o) for o in offsets])  # (num_shards + 1,)
    self._fds: dict[int, int] = {}

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, index: int) -> bytes | ReadError:
    index = int(index)
    k = int(np.searchsorted(self.starts, index, "right")) - 1
    where = f"{self.paths[k]}#{index - self.starts[k]}"
    try:
      fd = self._fds.get(k)
      if fd is None:
        fd = self._fds[k] = os.open(self.paths[k], os.O_RDONLY)
      size = int(self._sizes[index])
      buf = os.pread(fd, size, int(self._offsets[index]))
      if len(buf) != size:
        return ReadError(where, f"read {len(buf)} of {size} bytes (file truncated?)")
      return tfrecord.unframe(buf, where, self.check_crc)
    except (OSError, tfrecord.CorruptRecordError) as e:
      return ReadError(where, str(e))

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_fds"] = {}
    return state

  def __del__(self):
    close = getattr(os, "close", None)  # None during interpreter shutdown
    for fd in getattr(self, "_fds", {}).values():
      try:
        close(fd)
      except (OSError, TypeError):
        pass

  def __repr__(self) -> str:
    return f"TFRecordSource({self.data_dir!r}, {len(self)} records, {len(self.paths)} shards)"

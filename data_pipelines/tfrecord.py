"""TFRecord files without TensorFlow: framing, masked CRC32C, offset index.

A TFRecord file is a sequence of frames::

  uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

(all little-endian), the format ``tf.io.TFRecordWriter`` writes and
``tf.data.TFRecordDataset`` reads. The CRC is Castagnoli CRC32C, masked as
``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32).

Random access needs an index. Each shard ``X.tfrecord`` gets ``X.tfrecord.idx``:
one text line ``"<offset> <frame_size>"`` per record (the layout of NVIDIA
DALI's ``tfrecord2idx``), so record ``i`` is one ``pread`` (one byte-range
request on a bucket) away.

Paths may be local or ``gs://`` / ``s3://`` (``storage``): files are read
through ``storage`` and written through ``atomic_io``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
from typing import IO

import google_crc32c
import numpy as np

from data_pipelines import atomic_io, storage

_MASK_DELTA = 0xA282EAD8
HEADER_SIZE = 12  # uint64 length + uint32 crc
FOOTER_SIZE = 4


class CorruptRecordError(ValueError):
  """A frame whose length or CRC does not check out (names file and offset)."""


def masked_crc32c(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One record's bytes as stored in the file: header + data + footer."""
  length = struct.pack("<Q", len(data))
  return b"".join((length, struct.pack("<I", masked_crc32c(length)), data,
                   struct.pack("<I", masked_crc32c(data))))


def unframe(buf: bytes, where: str = "record", check_crc: bool = True) -> bytes:
  """Inverse of ``frame`` for exactly one frame; raises ``CorruptRecordError``."""
  if len(buf) < HEADER_SIZE + FOOTER_SIZE:
    raise CorruptRecordError(f"{where}: {len(buf)} bytes is shorter than a frame")
  (length,) = struct.unpack_from("<Q", buf, 0)
  if length != len(buf) - HEADER_SIZE - FOOTER_SIZE:
    raise CorruptRecordError(
        f"{where}: header says {length} data bytes, frame holds "
        f"{len(buf) - HEADER_SIZE - FOOTER_SIZE}")
  data = buf[HEADER_SIZE:HEADER_SIZE + length]
  if check_crc:
    (len_crc,) = struct.unpack_from("<I", buf, 8)
    if len_crc != masked_crc32c(buf[:8]):
      raise CorruptRecordError(f"{where}: length CRC mismatch")
    (data_crc,) = struct.unpack_from("<I", buf, HEADER_SIZE + length)
    if data_crc != masked_crc32c(data):
      raise CorruptRecordError(f"{where}: data CRC mismatch")
  return data


def index_path(path: str) -> str:
  return path + ".idx"


class TFRecordWriter:
  """Appends framed records to ``target`` and remembers (offset, size) of each.

  ``target``: a path, written through ``atomic_io.atomic_writer`` (so it
  appears whole at ``close()`` or not at all, also on a bucket), or a binary
  file object the caller owns, such as the converter's own
  ``atomic_io.atomic_writer``. The caller then writes the index
  (``write_index``).
  """

  def __init__(self, target):
    self._owned = isinstance(target, (str, os.PathLike))
    self._stack = contextlib.ExitStack()
    if self._owned:
      self._f = self._stack.enter_context(atomic_io.atomic_writer(target, "wb"))
    else:
      self._f = target
    self.path = os.fspath(target) if self._owned else None
    self._offset = 0
    self._closed = False
    self.index: list[tuple[int, int]] = []
    self.sha256 = hashlib.sha256()  # of the file's bytes, for the manifest

  def write(self, data: bytes) -> None:
    buf = frame(data)
    self._f.write(buf)
    self.sha256.update(buf)
    self.index.append((self._offset, len(buf)))
    self._offset += len(buf)

  def close(self) -> None:
    """Flushes; a file this writer opened is committed (fsynced and renamed,
    or uploaded)."""
    if self._closed:
      return
    self._closed = True
    self._f.flush()
    self._stack.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    # An error leaves the target as it was (the atomic writer drops its temp
    # file); a clean exit commits what was written. A borrowed file is left open.
    if not self._closed:
      self._closed = True
      self._stack.__exit__(*exc)


def index_bytes(index: list[tuple[int, int]]) -> bytes:
  """The ``.idx`` file's content for ``index`` rows of (offset, frame_size)."""
  return "".join(f"{o} {n}\n" for o, n in index).encode("ascii")


def write_index(path: str, index: list[tuple[int, int]]) -> None:
  """Writes the index atomically (``atomic_io``): readers never see half of one."""
  atomic_io.write_bytes(path, index_bytes(index))


def read_index(path: str) -> np.ndarray:
  """Index file -> int64 array (N, 2) of (offset, frame_size)."""
  data = storage.read_bytes(path)
  try:
    arr = np.loadtxt(io.BytesIO(data), dtype=np.int64, ndmin=2)
  except ValueError as e:
    raise CorruptRecordError(f"{path}: unreadable index: {e}") from e
  if arr.size == 0:
    return np.zeros((0, 2), np.int64)
  if arr.shape[1] != 2:
    raise CorruptRecordError(f"{path}: index rows must be 'offset size'")
  return arr


def read_frames(f: IO[bytes], where: str, check_crc: bool = True):
  """Yields (offset, data) of the frames of an open file read sequentially
  from its start; raises ``CorruptRecordError`` (naming ``where`` and the
  offset) on a torn or corrupt frame."""
  offset = 0
  while True:
    head = f.read(HEADER_SIZE)
    if not head:
      return
    if len(head) < HEADER_SIZE:
      raise CorruptRecordError(f"{where}@{offset}: truncated header")
    (length,) = struct.unpack_from("<Q", head, 0)
    rest = f.read(length + FOOTER_SIZE)
    if len(rest) < length + FOOTER_SIZE:
      raise CorruptRecordError(f"{where}@{offset}: truncated record")
    yield offset, unframe(head + rest, f"{where}@{offset}", check_crc)
    offset += HEADER_SIZE + length + FOOTER_SIZE


def iter_frames(path: str, check_crc: bool = True):
  """Yields (offset, data) sequentially; raises on a torn or corrupt frame."""
  with storage.open_read(path) as f:
    yield from read_frames(f, path, check_crc)


def build_index(path: str) -> list[tuple[int, int]]:
  """Recomputes the index of an existing file (checks every CRC)."""
  out = []
  for offset, data in iter_frames(path):
    out.append((offset, HEADER_SIZE + len(data) + FOOTER_SIZE))
  return out

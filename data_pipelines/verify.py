"""Checks a converted directory against its manifest (``samjax data inspect``).

The directory may be local or on ``gs://`` / ``s3://`` (``storage``). Each
shard is read once: the sha256 is taken from the same bytes the frames are
parsed from, so a bucket is downloaded once, not twice. On a bucket
``REMOTE_THREADS`` shards are checked at a time (each request waits tens of
ms; hashing and CRCs release the GIL); a local disk is read one shard after
the other. Problems are listed in shard order either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib

import numpy as np

from data_pipelines import dataset_layout, example_codec, storage, tfrecord

REMOTE_THREADS = 16


class _Hashing:
  """A read-only file wrapper that hashes every byte read through it."""

  def __init__(self, f):
    self._f = f
    self.sha256 = hashlib.sha256()

  def read(self, n: int = -1) -> bytes:
    data = self._f.read(n)
    self.sha256.update(data)
    return data

  def rest(self) -> None:
    """Reads (and hashes) whatever the frames did not cover."""
    while self.read(1 << 20):
      pass


def _frames_and_sha256(path: str) -> tuple[list[tuple[int, int]] | str, str]:
  """(the index the file's frames give, or why they are corrupt; the file's sha256)."""
  with storage.open_read(path) as f:
    hashed = _Hashing(f)
    try:
      index = [(offset, tfrecord.HEADER_SIZE + len(data) + tfrecord.FOOTER_SIZE)
               for offset, data in tfrecord.read_frames(hashed, path)]
    except tfrecord.CorruptRecordError as e:
      index = str(e)
    hashed.rest()
    return index, hashed.sha256.hexdigest()


def check_shard(path: str, entry: dict, check_crc: bool = True) -> list[str]:
  """Problems with one shard (empty list when it matches its manifest entry)."""
  problems = []
  if not storage.exists(path):
    return [f"{path}: missing"]
  size = storage.getsize(path)
  if size != entry["bytes"]:
    problems.append(f"{path}: {size} bytes, manifest says {entry['bytes']}")
  idx = tfrecord.index_path(path)
  if not storage.exists(idx):
    return problems + [f"{idx}: missing"]
  try:
    index = tfrecord.read_index(idx)
  except tfrecord.CorruptRecordError as e:
    return problems + [str(e)]
  if len(index) != entry["num_records"]:
    problems.append(f"{path}.idx: {len(index)} rows, manifest says {entry['num_records']}")
  if check_crc:
    rebuilt, digest = _frames_and_sha256(path)
    if digest != entry["sha256"]:
      problems.append(f"{path}: sha256 differs from the manifest")
    if isinstance(rebuilt, str):
      problems.append(rebuilt)
    elif not np.array_equal(np.asarray(rebuilt, np.int64).reshape(-1, 2), index):
      problems.append(f"{path}.idx: does not match the file's frames")
  return problems


def inspect(out_dir: str, check_crc: bool = True) -> tuple[str, bool]:
  """Human-readable summary of ``out_dir`` and whether everything checks out."""
  m = dataset_layout.load_manifest(out_dir)
  mib = sum(s["bytes"] for s in m["shards"]) / 2**20
  lines = [f"{out_dir}: {m['num_records']} images, {m['num_masks']} masks, "
           + f"{m['num_shards']} shards, {mib:.1f} MiB"]
  tc = m.get("train_copy")
  if tc:
    lines.append(f"training copies: image {tc['image_size']} (JPEG q{tc['quality']}, "
                 f"{tc['num_image_copies']} images), masks at {tc['gt_size']}"
                 + (f"; {len(tc['failed'])} failed" if tc["failed"] else ""))
  else:
    lines.append("training copies: none (the pipeline decodes and resizes the originals)")
  if m["skipped"]:
    lines.append("skipped: " + ", ".join(f"{k}={v}" for k, v in m["skipped_counts"].items()))
  problems = []
  threads = REMOTE_THREADS if storage.is_remote(out_dir) else 1
  with cf.ThreadPoolExecutor(max_workers=threads) as pool:
    for found in pool.map(lambda s: check_shard(storage.join(out_dir, s["file"]), s, check_crc),
                          m["shards"]):
      problems += found
  first = next((s for s in m["shards"] if s["num_records"]), None)
  if first is not None and not problems:
    path = storage.join(out_dir, first["file"])
    off, size = tfrecord.read_index(tfrecord.index_path(path))[0]
    ex = example_codec.decode(tfrecord.unframe(storage.read_range(path, int(off), int(size)),
                                               path), path)
    lines.append(f"first record: {ex['image/file_name'].decode()} id={ex['image/id']} "
                 f"{ex['image/width']}x{ex['image/height']}, "
                 f"{len(ex['mask/counts'])} masks, JPEG {len(ex['image/encoded']) / 1024:.0f} KiB"
                 + (f", copy {ex['train/image/width']}x{ex['train/image/height']} "
                    f"{len(ex['train/image/encoded']) / 1024:.0f} KiB"
                    if "train/image/encoded" in ex else ""))
  lines += problems
  lines.append("OK" if not problems else f"{len(problems)} problem(s)")
  return "\n".join(lines), not problems

"""Checks a converted directory against its manifest (``samjax data inspect``)."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from data_pipelines import dataset_layout, example_codec, tfrecord


def check_shard(path: str, entry: dict, check_crc: bool = True) -> list[str]:
  """Problems with one shard (empty list when it matches its manifest entry)."""
  problems = []
  if not os.path.exists(path):
    return [f"{path}: missing"]
  if os.path.getsize(path) != entry["bytes"]:
    problems.append(f"{path}: {os.path.getsize(path)} bytes, manifest says {entry['bytes']}")
  idx = tfrecord.index_path(path)
  if not os.path.exists(idx):
    return problems + [f"{idx}: missing"]
  try:
    index = tfrecord.read_index(idx)
  except tfrecord.CorruptRecordError as e:
    return problems + [str(e)]
  if len(index) != entry["num_records"]:
    problems.append(f"{path}.idx: {len(index)} rows, manifest says {entry['num_records']}")
  if check_crc:
    with open(path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    if digest != entry["sha256"]:
      problems.append(f"{path}: sha256 differs from the manifest")
    try:
      rebuilt = np.asarray(tfrecord.build_index(path), np.int64).reshape(-1, 2)
      if not np.array_equal(rebuilt, index):
        problems.append(f"{path}.idx: does not match the file's frames")
    except tfrecord.CorruptRecordError as e:
      problems.append(str(e))
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
  for s in m["shards"]:
    problems += check_shard(os.path.join(out_dir, s["file"]), s, check_crc)
  first = next((s for s in m["shards"] if s["num_records"]), None)
  if first is not None and not problems:
    path = os.path.join(out_dir, first["file"])
    off, size = tfrecord.read_index(tfrecord.index_path(path))[0]
    with open(path, "rb") as f:
      f.seek(off)
      ex = example_codec.decode(tfrecord.unframe(f.read(size), path), path)
    lines.append(f"first record: {ex['image/file_name'].decode()} id={ex['image/id']} "
                 f"{ex['image/width']}x{ex['image/height']}, "
                 f"{len(ex['mask/counts'])} masks, JPEG {len(ex['image/encoded']) / 1024:.0f} KiB"
                 + (f", copy {ex['train/image/width']}x{ex['train/image/height']} "
                    f"{len(ex['train/image/encoded']) / 1024:.0f} KiB"
                    if "train/image/encoded" in ex else ""))
  lines += problems
  lines.append("OK" if not problems else f"{len(problems)} problem(s)")
  return "\n".join(lines), not problems

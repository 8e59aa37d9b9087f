"""``samjax annotate export --tar``: an annotation folder as SA-1B tar shards
(``<stem>.jpg`` + ``<stem>.json`` members, as the released dataset), for
`samjax data convert` or any SA-1B reader."""

from __future__ import annotations

import tarfile

from data_pipelines import atomic_io, storage
from samjax.inference.sa1b_records import copy_problem, record_problem


def export_tars(out_dir: str, dest: str, per_tar: int, log=print) -> list[str]:
  """Writes ``dest/sa_annotate_NNNNN.tar`` shards of ``per_tar`` images each
  (images with at least one object), atomically; returns their paths."""
  if per_tar < 1:
    raise ValueError("--per-tar must be at least 1")
  pairs = []
  for name in sorted(storage.listdir(out_dir)):
    stem, ext = storage.splitext(name)
    if ext != ".json":
      continue
    path, jpg = storage.join(out_dir, name), storage.join(out_dir, stem + ".jpg")
    doc, problem = record_problem(path)
    if doc is None:
      log(f"skipping {name}: {problem}")
      continue
    if not doc["annotations"]:
      continue
    image_problem = copy_problem(jpg, jpg, doc["image"]["width"], doc["image"]["height"])
    if image_problem:
      log(f"skipping {name}: {image_problem}")
      continue
    pairs.append((stem, jpg, path))
  if not pairs:
    raise ValueError(f"{out_dir} holds no annotated image to export")
  atomic_io.ensure_dir(dest)
  written = []
  for start in range(0, len(pairs), per_tar):
    tar_path = storage.join(dest, f"sa_annotate_{start // per_tar:05d}.tar")
    with atomic_io.atomic_writer(tar_path) as f, tarfile.open(fileobj=f, mode="w") as tf:
      for stem, jpg, js in pairs[start:start + per_tar]:
        tf.add(jpg, arcname=f"{stem}.jpg")
        tf.add(js, arcname=f"{stem}.json")
    written.append(tar_path)
    log(f"wrote {tar_path} ({len(pairs[start:start + per_tar])} images)")
  return written

"""SA-1B tar/json -> TFRecord shards of ``tf.train.Example`` + index + manifest
(``samjax data convert``).

The output directory's layout (file names, manifest format) is
``dataset_layout``, shared with the readers. Images are split into N
contiguous, balanced runs of the scanned input order (tar locality: a worker
reads one or two tars). Each shard is written to a temp file, fsynced, and
renamed (index first, then data, then ``done.json``; the JSON files through
``atomic_io``), so an interrupted run leaves only whole shards; rerunning
skips them and rewrites the rest. Output is deterministic: rerunning or
resuming gives byte-identical shards and manifest.

By default each record also carries training-resolution copies
(``train_copy.py``: the image re-encoded at 1024 on its longest side, the
masks as RLEs at 256) next to the untouched originals, so the training
pipeline skips the full-size JPEG decode and resize. That adds roughly half
the original JPEG's size per image (~300 KiB at quality 95 for SA-1B).
``train_copy=None`` (CLI ``--train-size 0 --train-gt-size 0``) stores
originals only; the pipeline then decodes and resizes them (slower).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os

from data_pipelines import atomic_io, example_codec, sa1b, tfrecord, train_copy
from data_pipelines import dataset_layout as layout


def _write_json(path: str, obj) -> None:
  """Atomic, and deterministic bytes (sorted keys): reruns give identical files."""
  atomic_io.write_json(path, obj, indent=1, sort_keys=True, end="\n")


def split(items: list, num_shards: int) -> list[list]:
  """Contiguous balanced split: shard sizes differ by at most one."""
  q, r = divmod(len(items), num_shards)
  out, start = [], 0
  for i in range(num_shards):
    end = start + q + (i < r)
    out.append(items[start:end])
    start = end
  return out


def _copy_groups(copy: train_copy.TrainCopyConfig | None) -> tuple[str, ...]:
  if copy is None:
    return ()
  return tuple(g for g, on in (("train/image", copy.image_size), ("train/mask", copy.gt_size))
               if on)


def _plan(items: list[sa1b.Item], num_shards: int,
          copy: train_copy.TrainCopyConfig | None) -> dict:
  return {"format": layout.FORMAT, "version": layout.VERSION, "num_shards": num_shards,
          "train_copy": copy.describe() if _copy_groups(copy) else None,
          "shards": [[[it.source, it.key] for it in part]
                     for part in split(items, num_shards)]}


def _train_values(ex: dict, copy: train_copy.TrainCopyConfig | None,
                  it: sa1b.Item) -> tuple[dict, dict | None]:
  """(train/* feature values, None) or ({}, failure record) for one loaded image."""
  if not _copy_groups(copy):
    return {}, None
  img = ex["image"]
  counts = [a["segmentation"]["counts"] for a in ex["annotations"]]
  try:
    return train_copy.make(ex["jpeg"], int(img["height"]), int(img["width"]), counts,
                           copy), None
  except Exception as e:  # the original is still stored and usable
    return {}, {"source": it.source, "member": it.jpg.name,
                "reason": f"{type(e).__name__}: {e}"}


def write_shard(out_dir: str, index: int, num_shards: int, items: list[sa1b.Item],
                copy: train_copy.TrainCopyConfig | None = None) -> dict:
  """Converts ``items`` into shard ``index``; returns its stats (also in done.json).

  ``copy``: training-resolution copies to store next to the originals. An
  image whose copy cannot be made is stored without it (listed in the
  stats' ``train_copy_failed``); the pipeline then reads its original.
  """
  name = layout.shard_name(index, num_shards)
  path = os.path.join(out_dir, name)
  tmp = f"{path}{atomic_io.TEMP_MARKER}{os.getpid()}"
  skips: list[sa1b.Skip] = []
  num_masks = num_image_copies = 0
  copy_failed: list[dict] = []
  handles: dict[str, object] = {}
  try:
    with tfrecord.TFRecordWriter(tmp) as w:
      for it in items:
        fh = None
        if it.is_tar:
          if it.source not in handles:
            handles[it.source] = open(it.source, "rb")  # noqa: SIM115
          fh = handles[it.source]
        ex, s = sa1b.load(it, fh)
        skips.extend(s)
        if ex is None:
          continue
        train, failed = _train_values(ex, copy, it)
        if failed is not None:
          copy_failed.append(failed)
        num_image_copies += "train/image/encoded" in train
        data = example_codec.encode(ex["image"], ex["jpeg"], ex["annotations"], train)
        w.write(data)
        num_masks += len(ex["annotations"])
      w.close()
      index_rows = w.index
      digest = w.sha256.hexdigest()
  finally:
    for fh in handles.values():
      fh.close()
  tfrecord.write_index(f"{tmp}.idx", index_rows)
  os.replace(f"{tmp}.idx", tfrecord.index_path(path))
  os.replace(tmp, path)
  stats = {"file": name, "index": name + ".idx", "num_records": len(index_rows),
           "num_masks": num_masks, "bytes": os.path.getsize(path),
           "sha256": digest, "num_image_copies": num_image_copies,
           "train_copy_failed": copy_failed,
           "skipped": [dataclasses.asdict(s) for s in skips]}
  _write_json(os.path.join(out_dir, layout.done_name(name)), stats)
  return stats


def _finished(out_dir: str, index: int, num_shards: int) -> dict | None:
  """Stats of a finished shard, or None when it has to be (re)written."""
  name = layout.shard_name(index, num_shards)
  done = os.path.join(out_dir, layout.done_name(name))
  path = os.path.join(out_dir, name)
  try:
    with open(done) as f:
      stats = json.load(f)
    if (os.path.getsize(path) == stats["bytes"]
        and os.path.exists(tfrecord.index_path(path))):
      return stats
  except (OSError, ValueError, KeyError):
    pass
  return None


def _clean_temps(out_dir: str) -> None:
  for n in os.listdir(out_dir):
    if atomic_io.TEMP_MARKER in n:
      os.remove(os.path.join(out_dir, n))


def convert(src: list[str], out_dir: str, num_shards: int, workers: int = 1,
            only_shards: list[int] | None = None, overwrite: bool = False,
            progress: bool = True, log=print,
            copy: train_copy.TrainCopyConfig | None = train_copy.DEFAULT
            ) -> dict | None:
  """Converts SA-1B inputs; returns the manifest (None if shards remain).

  Args:
    src: tar files and/or directories (see ``sa1b.scan``).
    out_dir: output directory (created).
    num_shards: number of TFRecord shards.
    workers: worker processes (spawned); <= 1 converts in this process.
    only_shards: write just these shard indices (e.g. to spread one
      conversion over machines); the manifest is written once all exist.
    overwrite: discard an existing conversion of different inputs.
    progress: show a tqdm bar (images).
    log: where one-line messages go.
    copy: training-resolution copies stored next to the originals (default
      image 1024 / masks 256, see ``train_copy``); None stores originals only.

  Raises:
    ValueError: ``out_dir`` holds a conversion of other inputs/shard count
      and ``overwrite`` is False, or ``num_shards`` < 1.
  """
  if num_shards < 1:
    raise ValueError(f"--shards must be >= 1, got {num_shards}")
  items, scan_skips = sa1b.scan(src)
  _prepare_out_dir(out_dir, _plan(items, num_shards, copy), overwrite)
  parts = split(items, num_shards)
  wanted = range(num_shards) if only_shards is None else sorted(set(only_shards))
  for i in wanted:
    if not 0 <= i < num_shards:
      raise ValueError(f"shard index {i} outside [0, {num_shards})")
  stats = {i: s for i in wanted if (s := _finished(out_dir, i, num_shards)) is not None}
  todo = [i for i in wanted if i not in stats]
  log(f"{len(items)} images in {len(src)} input(s) -> {num_shards} shards in "
      f"{out_dir}: {len(stats)} already finished, {len(todo)} to write")
  stats.update(_write_shards(out_dir, num_shards, parts, todo, copy, workers, progress))
  for i in range(num_shards):
    if i not in stats and (s := _finished(out_dir, i, num_shards)) is not None:
      stats[i] = s
  if len(stats) < num_shards:
    log(f"{len(stats)} of {num_shards} shards finished; rerun to write the rest")
    return None
  manifest = _manifest(src, items, scan_skips, [stats[i] for i in range(num_shards)],
                       copy)
  _write_json(os.path.join(out_dir, layout.MANIFEST), manifest)
  n_skip = len(manifest["skipped"])
  log(f"wrote {manifest['num_records']} images, {manifest['num_masks']} masks; "
      f"skipped {n_skip} input(s)/annotation(s)"
      + (": " + ", ".join(f"{k}={v}" for k, v in manifest["skipped_counts"].items())
         if n_skip else ""))
  return manifest


def _prepare_out_dir(out_dir: str, plan: dict, overwrite: bool) -> None:
  """Creates ``out_dir`` and records ``plan``; a conversion of other inputs
  there is an error unless ``overwrite`` (then its shards are removed)."""
  os.makedirs(out_dir, exist_ok=True)
  plan_path = os.path.join(out_dir, layout.PLAN)
  if os.path.exists(plan_path):
    with open(plan_path) as f:
      old = json.load(f)
    if old != plan:
      if not overwrite:
        raise ValueError(
            f"{out_dir} holds a conversion of other inputs or shard count "
            f"({old.get('num_shards')} shards); pass --overwrite or another --out")
      for n in os.listdir(out_dir):
        if n.startswith(layout.SHARD_PREFIX) or n in (layout.MANIFEST, layout.PLAN):
          os.remove(os.path.join(out_dir, n))
  _write_json(plan_path, plan)
  _clean_temps(out_dir)


def _write_shards(out_dir: str, num_shards: int, parts: list, todo: list[int], copy,
                  workers: int, progress: bool) -> dict[int, dict]:
  """Writes shards ``todo`` (in this process or ``workers`` spawned ones);
  returns their stats by index."""
  stats = {}
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=sum(len(parts[i]) for i in todo), unit="img", desc="convert")
  if workers <= 1 or len(todo) <= 1:
    for i in todo:
      stats[i] = write_shard(out_dir, i, num_shards, parts[i], copy)
      if bar is not None:
        bar.update(len(parts[i]))
  else:
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
      futs = {pool.submit(write_shard, out_dir, i, num_shards, parts[i], copy): i
              for i in todo}
      for fut in cf.as_completed(futs):
        i = futs[fut]
        stats[i] = fut.result()
        if bar is not None:
          bar.update(len(parts[i]))
  if bar is not None:
    bar.close()
  return stats


def _manifest(src, items, scan_skips, shard_stats, copy) -> dict:
  skipped = [dataclasses.asdict(s) for s in scan_skips]
  for s in shard_stats:
    skipped.extend(s["skipped"])
  counts: dict[str, int] = {}
  for s in skipped:
    counts[s["kind"]] = counts.get(s["kind"], 0) + 1
  return {
      "format": layout.FORMAT,
      "version": layout.VERSION,
      "inputs": sorted(set(src)),
      "num_images_scanned": len(items),
      "num_records": sum(s["num_records"] for s in shard_stats),
      "num_masks": sum(s["num_masks"] for s in shard_stats),
      "num_shards": len(shard_stats),
      "shards": [{k: s[k] for k in ("file", "index", "num_records", "num_masks",
                                    "bytes", "sha256")} for s in shard_stats],
      "feature_spec": example_codec.feature_spec(_copy_groups(copy)),
      "train_copy": None if not _copy_groups(copy) else {
          **copy.describe(),
          "num_image_copies": sum(s.get("num_image_copies", 0) for s in shard_stats),
          "failed": [f for s in shard_stats for f in s.get("train_copy_failed", [])]},
      "skipped_counts": dict(sorted(counts.items())),
      "skipped": skipped,
  }

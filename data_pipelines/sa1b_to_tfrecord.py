"""SA-1B tar/json (or a COCO instance JSON + images) -> TFRecord shards of
``tf.train.Example`` + index + manifest (``samjax data convert``).

COCO inputs (``coco_src``, see ``coco.py``) become the same records: each
image is scanned into a ``coco.Item`` and loaded by ``coco.load`` instead of
``sa1b.load``; everything else (shards, resume, overwrite, manifest, skips)
is shared. Their manifest also has a ``coco`` section (categories, masks
per category, re-encoded images).

The output directory's layout (file names, manifest format) is
``dataset_layout``, shared with the readers. Images are split into N
contiguous, balanced runs of the scanned input order (tar locality: a worker
reads one or two tars).

Nothing lost, nothing half-written:

* Every file goes through ``atomic_io`` (temp file, fsync, rename; on a
  bucket one object uploaded whole): a shard's index, then its data, then its
  ``done.json``, which records the sizes and sha256s of both files and a
  digest of the shard's inputs and settings. An interrupted run leaves whole
  files and temp files only (on a bucket: whole objects only).
* On a rerun a shard counts as finished only when its ``done.json`` parses
  and both files match what it recorded for these inputs; anything else
  (truncated, bit-flipped, missing index, empty ``done.json``) is rewritten.
  Temp files of the shards being rewritten are deleted.
* Output is deterministic: rerunning or resuming gives byte-identical shards
  and manifest.
* Inputs and output may be local or on ``gs://`` / ``s3://`` (``storage``),
  in any combination. A store that still fails after ``storage``'s retries
  stops the run with one line naming the object (finished shards stay
  finished); it never turns into skipped inputs. A shard bound for a bucket
  is spooled to local temp space first (``atomic_io``): each worker needs
  room for one shard there. Remote tar members are one byte-range request
  each, so a worker waits for the store about twice per image; more
  ``--workers`` than cores hide that.
* Spawned workers exit when the converter dies (``_worker_init``), so a
  killed conversion leaves no processes behind.
* ``overwrite`` deletes only file names of the layout (``dataset_layout``),
  the manifest first, so the folder never claims a conversion it no longer
  holds; other files in the output folder are never touched.

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
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time

from data_pipelines import atomic_io, coco, example_codec, sa1b, storage, tfrecord, train_copy
from data_pipelines import dataset_layout as layout

# Test-only fault hook: seconds each worker sleeps after every record, so a
# test can kill a conversion while its workers are mid-shard. Never set in
# production.
FAULT_RECORD_DELAY = "SAMJAX_FAULT_CONVERT_RECORD_DELAY"


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


def _ref(it: sa1b.Item | coco.Item) -> list:
  """An item in the plan: SA-1B (source, key); COCO adds a digest of its
  annotations, so a changed JSON rewrites the shards it changes."""
  return it.ref if isinstance(it, coco.Item) else [it.source, it.key]


def _member(it: sa1b.Item | coco.Item) -> str:
  return it.member if isinstance(it, coco.Item) else it.jpg.name


def _plan(items: list[sa1b.Item], num_shards: int,
          copy: train_copy.TrainCopyConfig | None) -> dict:
  return {"format": layout.FORMAT, "version": layout.VERSION, "num_shards": num_shards,
          "train_copy": copy.describe() if _copy_groups(copy) else None,
          "shards": [[_ref(it) for it in part] for part in split(items, num_shards)]}


def _shard_digest(index: int, num_shards: int, items: list[sa1b.Item],
                  copy: train_copy.TrainCopyConfig | None) -> str:
  """sha256 of what shard ``index`` is made from (its inputs and the settings),
  recorded in its done.json: a shard left by a conversion of other inputs is
  never taken for finished, even when plan.json is gone."""
  doc = {"format": layout.FORMAT, "version": layout.VERSION, "index": index,
         "num_shards": num_shards,
         "train_copy": copy.describe() if _copy_groups(copy) else None,
         "items": [_ref(it) for it in items]}
  return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with storage.open_read(path) as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


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
    return {}, {"source": it.source, "member": _member(it),
                "reason": f"{type(e).__name__}: {e}"}


def write_shard(out_dir: str, index: int, num_shards: int, items: list[sa1b.Item],
                copy: train_copy.TrainCopyConfig | None = None) -> dict:
  """Converts ``items`` into shard ``index``; returns its stats (also in done.json).

  ``copy``: training-resolution copies to store next to the originals. An
  image whose copy cannot be made is stored without it (listed in the
  stats' ``train_copy_failed``); the pipeline then reads its original.
  """
  name = layout.shard_name(index, num_shards)
  path = storage.join(out_dir, name)
  done = storage.join(out_dir, layout.done_name(name))
  # A shard being rewritten is unfinished from the first byte on.
  storage.remove(done)
  delay = float(os.environ.get(FAULT_RECORD_DELAY) or 0)
  skips: list[sa1b.Skip] = []
  num_masks = num_image_copies = 0
  copy_failed: list[dict] = []
  coco_items = any(isinstance(it, coco.Item) for it in items)
  reencoded: list[dict] = []
  categories: dict[str, int] = {}
  with contextlib.ExitStack() as stack:
    handles: dict[str, object] = {}
    # Data and index each appear whole or not at all (index first); an error
    # or a kill leaves at most temp files, which the next run deletes.
    w = tfrecord.TFRecordWriter(stack.enter_context(atomic_io.atomic_writer(path)))
    for it in items:
      fh = None
      # A local tar stays open for the shard; on a bucket each member is
      # one byte-range request (fh None).
      if it.is_tar and not storage.is_remote(it.source):
        if it.source not in handles:
          handles[it.source] = stack.enter_context(storage.open_read(it.source))
        fh = handles[it.source]
      if isinstance(it, coco.Item):
        ex, item_skips = coco.load(it)
      else:
        ex, item_skips = sa1b.load(it, fh)
      skips.extend(item_skips)
      if ex is not None and coco_items:
        if ex["reencoded"]:
          reencoded.append({"source": it.source, "member": it.member,
                            "reason": ex["reencoded"]})
        for a in ex["annotations"]:
          cat = str(a.get("category_id"))
          categories[cat] = categories.get(cat, 0) + 1
      if ex is not None:
        train, failed = _train_values(ex, copy, it)
        if failed is not None:
          copy_failed.append(failed)
        num_image_copies += "train/image/encoded" in train
        w.write(example_codec.encode(ex["image"], ex["jpeg"], ex["annotations"], train))
        num_masks += len(ex["annotations"])
      if delay:
        time.sleep(delay)
    w.close()
    index_data = tfrecord.index_bytes(w.index)
    atomic_io.write_bytes(tfrecord.index_path(path), index_data)
  stats = {"file": name, "index": name + ".idx", "num_records": len(w.index),
           "num_masks": num_masks, "bytes": storage.getsize(path),
           "sha256": w.sha256.hexdigest(),
           "index_sha256": hashlib.sha256(index_data).hexdigest(),
           "plan_sha256": _shard_digest(index, num_shards, items, copy),
           "num_image_copies": num_image_copies,
           "train_copy_failed": copy_failed,
           "skipped": [dataclasses.asdict(s) for s in skips]}
  if coco_items:
    stats["coco"] = {"reencoded": reencoded, "masks_per_category": categories}
  _write_json(done, stats)
  return stats


def _finished(out_dir: str, index: int, num_shards: int, digest: str) -> dict | None:
  """Stats of shard ``index`` when it is finished, or None when it has to be
  (re)written.

  Finished means: its done.json parses, was written for the same inputs and
  settings (``digest``, see ``_shard_digest``), and the data and index files
  have exactly the size and sha256s it recorded. Hashing a finished shard
  reads it once, far cheaper than converting it again, and catches truncation,
  bit flips and a lost or stale index alike.
  """
  name = layout.shard_name(index, num_shards)
  path = storage.join(out_dir, name)
  try:
    stats = json.loads(storage.read_bytes(storage.join(out_dir, layout.done_name(name))))
    if (stats["file"] == name and stats.get("plan_sha256") == digest
        and storage.getsize(path) == stats["bytes"]
        and _file_sha256(tfrecord.index_path(path)) == stats["index_sha256"]
        and _file_sha256(path) == stats["sha256"]):
      return stats
  except storage.StorageError:  # the store is failing: not a verdict on the shard
    raise
  except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable, not our JSON
    pass
  return None


def _check_finished(out_dir: str, num_shards: int, indices, digests: list[str],
                    workers: int) -> dict[int, dict]:
  """Stats of the finished shards among ``indices`` (``_finished``), hashed by
  ``workers`` threads (at least ``sa1b.SCAN_THREADS`` on a bucket, where
  each file is a stream of requests): hashlib releases the GIL, so verifying
  a large resumed conversion goes as fast as the disk or network allows."""
  if storage.is_remote(out_dir):
    workers = max(workers, sa1b.SCAN_THREADS)
  with cf.ThreadPoolExecutor(max_workers=workers) as pool:
    found = pool.map(lambda i: (i, _finished(out_dir, i, num_shards, digests[i])), indices)
    return {i: s for i, s in found if s is not None}


def _clean_temps(out_dir: str, targets: set[str]) -> None:
  """Deletes temp files that killed writes of ``targets`` left behind.

  Only the files this run is about to write: another machine converting
  other ``--only-shards`` into the same folder keeps its temp files. (A
  bucket has none: a write there is one upload, nothing before it.)
  """
  for n in storage.listdir(out_dir):
    if layout.is_temp_file(n, targets):
      storage.remove(storage.join(out_dir, n))


def convert(src: list[str] | None, out_dir: str, num_shards: int, workers: int = 1,
            only_shards: list[int] | None = None, overwrite: bool = False,
            progress: bool = True, log=print,
            copy: train_copy.TrainCopyConfig | None = train_copy.DEFAULT,
            coco_src: coco.Input | None = None) -> dict | None:
  """Converts SA-1B or COCO inputs; returns the manifest (None if shards remain).

  Arguments are checked and the inputs scanned before anything is written.

  Args:
    src: tar files and/or directories (see ``sa1b.scan``); None (or empty)
      with ``coco_src``.
    out_dir: output directory (created).
    num_shards: number of TFRecord shards, at most the number of images.
    workers: processes converting shards, >= 1; 1 converts in this process,
      more spawn that many workers (which exit if this process dies).
    only_shards: write just these shard indices (e.g. to spread one
      conversion over machines); the manifest is written once all exist.
    overwrite: discard an existing conversion of different inputs (only the
      layout's files are deleted, see ``_prepare_out_dir``).
    progress: show a tqdm bar (images).
    log: where one-line messages go.
    copy: training-resolution copies stored next to the originals (default
      image 1024 / masks 256, see ``train_copy``); None stores originals only.
    coco_src: a COCO instance JSON + image folder to convert instead of
      ``src`` (see ``coco.py``); exactly one of the two.

  Raises:
    ValueError: ``num_shards`` < 1, ``workers`` < 1, a shard index outside
      the range, no images in the inputs, more shards than images, or
      ``out_dir`` holds a conversion of other inputs/shard count and
      ``overwrite`` is False; both or neither of ``src`` and ``coco_src``;
      the COCO JSON is not a COCO instance file.
    OSError: an input is missing or ``out_dir`` cannot be written.
  """
  wanted = _wanted_shards(src, coco_src, num_shards, workers, only_shards)
  src, items, scan_skips, coco_meta = _scan_inputs(src, coco_src)
  if num_shards > len(items):
    raise ValueError(f"--shards {num_shards} is more than the {len(items)} image(s) found "
                     f"in the inputs; every shard needs at least one image")
  atomic_io.ensure_dir(out_dir)
  _prepare_out_dir(out_dir, _plan(items, num_shards, copy), overwrite)
  parts = split(items, num_shards)
  digests = [_shard_digest(i, num_shards, parts[i], copy) for i in range(num_shards)]
  stats = _check_finished(out_dir, num_shards, wanted, digests, workers)
  todo = [i for i in wanted if i not in stats]
  _clean_temps(out_dir, _rewrite_targets(num_shards, todo))
  log(f"{len(items)} images in {len(src)} input(s) -> {num_shards} shards in "
      f"{out_dir}: {len(stats)} already finished, {len(todo)} to write")
  stats.update(_write_shards(out_dir, num_shards, parts, todo, copy, workers, progress))
  stats.update(_check_finished(out_dir, num_shards,
                               [i for i in range(num_shards) if i not in stats], digests,
                               workers))
  if len(stats) < num_shards:
    log(f"{len(stats)} of {num_shards} shards finished; rerun to write the rest")
    return None
  return _write_manifest(out_dir, src, items, scan_skips,
                         [stats[i] for i in range(num_shards)], copy, coco_src,
                         coco_meta, log)


def _wanted_shards(src: list[str] | None, coco_src: coco.Input | None, num_shards: int,
                   workers: int, only_shards: list[int] | None) -> list[int] | range:
  """Checks ``convert``'s arguments (before any input is read); returns the
  shard indices to write: ``only_shards`` sorted without repeats, else all."""
  if bool(src) == (coco_src is not None):
    raise ValueError("give exactly one input: SA-1B paths (--src) or a COCO JSON (--coco)")
  if num_shards < 1:
    raise ValueError(f"--shards must be >= 1, got {num_shards}")
  if workers < 1:
    raise ValueError(f"--workers must be >= 1 (1 converts in this process), got {workers}")
  wanted = range(num_shards) if only_shards is None else sorted(set(only_shards))
  for i in wanted:
    if not 0 <= i < num_shards:
      raise ValueError(f"shard index {i} outside [0, {num_shards})")
  return wanted


def _scan_inputs(src: list[str] | None, coco_src: coco.Input | None):
  """Scans the SA-1B paths ``src`` or the COCO input ``coco_src``.

  Returns ``(src, items, scan_skips, coco_meta)``: ``src`` is ``[the COCO
  JSON]`` for a COCO input, ``coco_meta`` None for SA-1B. Raises ValueError
  (naming the first problem found) when no image is usable.
  """
  coco_meta = None
  if coco_src is not None:
    items, scan_skips, coco_meta = coco.scan(coco_src)
    src = [coco_src.annotations]
    if not items:
      why = f"; first problem: {scan_skips[0]}" if scan_skips else ""
      raise ValueError(f"no image with usable annotations in {coco_src.annotations}{why}")
  else:
    items, scan_skips = sa1b.scan(src)
  if not items:
    why = f"; first problem: {scan_skips[0]}" if scan_skips else ""
    shown = ", ".join(src[:3]) + (", ..." if len(src) > 3 else "")
    raise ValueError(f"no SA-1B images (jpg + json pairs) in {len(src)} input(s) "
                     f"({shown}){why}")
  return src, items, scan_skips, coco_meta


def _rewrite_targets(num_shards: int, todo: list[int]) -> set[str]:
  """File names this run is about to write: the plan, the manifest and each
  shard of ``todo``'s data, index and done.json (see ``_clean_temps``)."""
  targets = {layout.PLAN, layout.MANIFEST}
  for i in todo:
    name = layout.shard_name(i, num_shards)
    targets |= {name, tfrecord.index_path(name), layout.done_name(name)}
  return targets


def _write_manifest(out_dir: str, src: list[str], items, scan_skips, shard_stats: list[dict],
                    copy: train_copy.TrainCopyConfig | None, coco_src: coco.Input | None,
                    coco_meta, log) -> dict:
  """Writes the manifest of a conversion whose shards are all finished
  (``shard_stats`` in shard order), logs a one-line summary, returns it."""
  manifest = _manifest(src, items, scan_skips, shard_stats, copy)
  if coco_src is not None:
    manifest["coco"] = _coco_section(coco_src, coco_meta, shard_stats)
  _write_json(storage.join(out_dir, layout.MANIFEST), manifest)
  n_skip = len(manifest["skipped"])
  log(f"wrote {manifest['num_records']} images, {manifest['num_masks']} masks; "
      f"skipped {n_skip} input(s)/annotation(s)"
      + (": " + ", ".join(f"{k}={v}" for k, v in manifest["skipped_counts"].items())
         if n_skip else ""))
  return manifest


def _prepare_out_dir(out_dir: str, plan: dict, overwrite: bool) -> None:
  """Records ``plan`` in ``out_dir``; a conversion of other inputs there (or an
  unreadable plan.json) is an error unless ``overwrite``.

  ``overwrite`` deletes that conversion's files, and only files named by the
  layout (``dataset_layout.is_output_file`` / ``is_temp_file``): the manifest
  first (the folder stops claiming a finished dataset), then every done.json
  (no old shard can pass for finished), then shards, indices and temp files;
  plan.json goes last, replaced by the new one, so a crash part-way leaves
  the old plan and the next run needs ``overwrite`` again.
  """
  plan_path = storage.join(out_dir, layout.PLAN)
  if storage.exists(plan_path):
    try:
      old = json.loads(storage.read_bytes(plan_path))
      differs = old != plan
      what = (f"a conversion of other inputs or shard count "
              f"({old.get('num_shards') if isinstance(old, dict) else '?'} shards)")
    except ValueError as e:
      differs, what = True, f"an unreadable {layout.PLAN} ({e})"
    if differs:
      if not overwrite:
        raise ValueError(f"{out_dir} holds {what}; pass --overwrite to replace it "
                         "or choose another --out")
      names = sorted((n for n in storage.listdir(out_dir) if n != layout.PLAN
                      and (layout.is_output_file(n) or layout.is_temp_file(n))),
                     key=lambda n: (n != layout.MANIFEST, not n.endswith(".done.json"), n))
      for n in names:
        storage.remove(storage.join(out_dir, n))
  _write_json(plan_path, plan)


def _worker_init(parent_pid: int) -> None:
  """Initializer of each spawned worker: the worker exits when the converter dies.

  An idle pool worker blocks on its task queue, and a busy one finishes its
  shard and then blocks; a killed parent (kill -9, the OOM killer) can close
  neither, so without this its workers, hundreds of MB each, would run on
  until killed by hand. Two layers, each skipped where unsupported:

  * a daemon thread waits on multiprocessing's parent sentinel (a pipe whose
    write end only the parent holds; a process handle on Windows), ready the
    moment the parent dies, and ends the worker with ``os._exit``: portable,
    and no polling;
  * on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill the
    worker at once, even one busy in C code that holds the GIL. (The kernel
    fires it when the spawning *thread* exits: without max_tasks_per_child
    the pool spawns every worker from the thread that submits, which
    outlives the pool.)

  A worker killed mid-shard leaves temp files only; the next run deletes them
  and rewrites that shard.
  """
  if sys.platform.startswith("linux"):
    import ctypes
    import signal
    with contextlib.suppress(OSError, AttributeError):
      pr_set_pdeathsig = 1
      ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
      os._exit(1)
  parent = multiprocessing.parent_process()
  if parent is not None:
    def watch():
      parent.join()  # returns when the sentinel is ready: the parent is gone
      os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _write_shards(out_dir: str, num_shards: int, parts: list, todo: list[int], copy,
                  workers: int, progress: bool) -> dict[int, dict]:
  """Writes shards ``todo`` (in this process or ``workers`` spawned ones);
  returns their stats by index."""
  stats = {}
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=sum(len(parts[i]) for i in todo), unit="img", desc="convert")
  if workers == 1 or len(todo) <= 1:
    for i in todo:
      stats[i] = write_shard(out_dir, i, num_shards, parts[i], copy)
      if bar is not None:
        bar.update(len(parts[i]))
  else:
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                initializer=_worker_init, initargs=(os.getpid(),)) as pool:
      futs = {pool.submit(write_shard, out_dir, i, num_shards, parts[i], copy): i
              for i in todo}
      try:
        for fut in cf.as_completed(futs):
          i = futs[fut]
          stats[i] = fut.result()
          if bar is not None:
            bar.update(len(parts[i]))
      except BaseException:
        # A failed shard (or Ctrl-C) stops the run: shards not started are
        # dropped, running ones finish whole.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
  if bar is not None:
    bar.close()
  return stats


def _coco_section(coco_src: coco.Input, meta: dict, shard_stats: list[dict]) -> dict:
  """The manifest's account of a COCO conversion: what the records cannot hold
  (categories) and how the fields were filled."""
  per_cat: dict[str, int] = {}
  for s in shard_stats:
    for k, v in s.get("coco", {}).get("masks_per_category", {}).items():
      per_cat[k] = per_cat.get(k, 0) + v
  return {
      "annotations": coco_src.annotations,
      "images": coco_src.images,
      "keep_crowd": coco_src.keep_crowd,
      "categories": meta["categories"],
      "masks_per_category": dict(sorted(per_cat.items(), key=_numeric_first)),
      "mask_id": "the COCO annotation id (category_id: look it up in the JSON)",
      "point_coords": coco.POINT_RULE,
      "predicted_iou": 1.0, "stability_score": 1.0, "crop_box": "the whole image",
      "reencoded": [r for s in shard_stats for r in s.get("coco", {}).get("reencoded", [])],
  }


def _numeric_first(kv: tuple[str, int]):
  """Category ids (JSON keys, so strings) in numeric order, others after."""
  k = kv[0]
  try:
    return (0, int(k), k)
  except ValueError:
    return (1, 0, k)


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

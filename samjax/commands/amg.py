"""``samjax amg``: label a folder of images automatically (SA-1B format JSON, or
the official ``scripts/amg.py`` output)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import sys

from data_pipelines import atomic_io, storage
from samjax.commands import amg_official
from samjax.commands.generator_flags import add_generator_flags, generator_kwargs
from samjax.inference import process_group
from samjax.inference.sa1b_records import (
  COPY_EXTS,
  IMAGE_EXTS,
  copy_problem,
  record_problem,
  sa1b_record,
  write_copy,
)

HELP = """\
Fully automatic masks for every image (SAM's data engine), one SA-1B-format
JSON per image, ready for `samjax data convert`.

  samjax amg --checkpoint sam_vit_b.pth --images photos/ --out labels/ \\
      [--points-per-side 32] [--crop-n-layers 1] [--overlays] [--copy-images]

The official scripts/amg.py command line works too (--input, --output,
--model-type, --device, --convert-to-rle and its AMG settings); add
--output-format official for its output: per image a folder <stem>/ of binary
masks 0.png, 1.png, ... with metadata.csv, or with --convert-to-rle
<stem>.json, a JSON list of the generator's records (COCO RLE). PNGs are
written with OpenCV when installed (the official bytes), else with PIL (same
pixels). That layout resumes too: an image is done when its metadata.csv
(written last) or its JSON list is whole. --device takes the official names
(cuda -> JAX's gpu); an unavailable device is noted and JAX's default used.

--images takes directories (their image files, not recursive) and/or files.
With the default --output-format sa1b, for each image <stem>.<ext>, --out
gets <stem>.json:
  {"image": {"image_id", "width", "height", "file_name"},
   "annotations": [{"id", "segmentation": COCO RLE, "bbox": [x, y, w, h],
                    "area", "predicted_iou", "stability_score",
                    "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}
image_id is N for files named sa_N.*, else a CRC32 of the file name.
--copy-images puts each JPEG input beside its JSON as <stem>.jpg (the layout
the converter reads): byte for byte, or re-encoded upright (quality 95) when
its EXIF orientation rotates it, since masks are in the upright frame.
--overlays writes <stem>.png with the masks tinted (for images labelled in
this run). Images are read like `samjax segment` reads them (EXIF
orientation, 16-bit and alpha handling: see samjax/inference/image_io.py).

--images and --out may be local, gs:// or s3:// (a bucket prefix of images,
a prefix to write under).

Resumable: every file is written atomically (on a bucket: uploaded as one
object once complete) and the JSON last, so a kill at any moment leaves each
output whole or absent; rerun the same command. An
image counts as done when its JSON parses with the schema above (and, with
--copy-images, its copy is complete); anything else is redone, and temp
files of an interrupted run are removed. Unreadable images (not an image,
truncated, an unsupported pixel mode, over PIL's decompression-bomb size
limit) are reported with the reason and skipped. Exit status is non-zero (1)
only if nothing could be processed; failures next to successes are listed at
the end.

On N processes (every host of a pod, or several on one machine): start the
same command on each, with the environment `samjax train` reads:
JAX_COORDINATOR_ADDRESS=<process 0's host>:<port>, JAX_NUM_PROCESSES=N,
JAX_PROCESS_ID=0..N-1. The image list (in the order above) is dealt round
robin, image i to process i % N; each process writes and resumes its own
images only, so together they write exactly the files of a one-process run.
Restart on any N, the same or another: an image is done when its outputs
are whole, whoever wrote them. Log lines and the progress bar say
"process k/N"; failures are listed by the process that met them. The
processes wait for each other at the end, then all exit with the same
status: 1 if any of them stopped on an error, or if no image at all could
be processed, else 0. If one dies (kill -9, a lost host), jax stops the
others about 100 s later (its heartbeat timeout); rerun to finish.
"""

# Temp files of this command's atomic writes (``atomic_io.TEMP_MARKER``).
_TEMP_FILE = re.compile(r"(.+)\.(?:json|jpg|png)" + re.escape(atomic_io.TEMP_MARKER)
                        + r"[0-9a-f]+")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter):
  """The description as written, and every option's default in its help."""


# Official --model-type names; "default" is the official name of vit_h.
MODEL_TYPES = {"default": "vit_h"}


def register(subparsers):
  p = subparsers.add_parser("amg", help="automatic masks for a folder of images (SA-1B JSON)",
                            description=HELP, formatter_class=_HelpFormatter)
  p.add_argument("--checkpoint", required=True, help="official .pth or samjax model directory")
  p.add_argument("--variant", "--model-type", dest="variant",
                 help="expected model size: vit_b, vit_l, vit_h ('default' = vit_h) or a "
                      "samjax variant; inferred from the weights if omitted")
  p.add_argument("--images", "--input", dest="images", required=True, nargs="+",
                 metavar="DIR_OR_FILE", help="image files and/or directories of images")
  p.add_argument("--out", "--output", dest="out", required=True, help="output directory")
  p.add_argument("--output-format", choices=("sa1b", "official"), default="sa1b",
                 help="sa1b: one SA-1B JSON per image; official: the official "
                      "scripts/amg.py layout (see above)")
  p.add_argument("--convert-to-rle", action="store_true",
                 help="with --output-format official: <stem>.json lists of COCO RLE "
                      "records instead of PNG folders (SA-1B output is always RLE)")
  p.add_argument("--device", default=None,
                 help="official flag: cuda / cuda:N -> JAX's gpu, cpu -> cpu, tpu; "
                      "None: JAX's default device. An unavailable device is noted and "
                      "the default used")
  add_generator_flags(p)
  p.add_argument("--overlays", action="store_true",
                 help="also write <stem>.png overlays (sa1b format)")
  p.add_argument("--copy-images", action="store_true",
                 help="copy JPEG inputs into --out (SA-1B layout for `samjax data convert`)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)


def select_device(device: str | None) -> str | None:
  """Makes the official ``--device`` JAX's default device; returns a note
  when it cannot (the run goes on on JAX's default), else None."""
  if device is None:
    return None
  import jax
  name, _, index = device.partition(":")
  platform = {"cuda": "gpu"}.get(name.lower(), name.lower())
  try:
    # This process's own devices: on N processes jax.devices() lists every
    # process's, and device 0 may belong to another host.
    devices = jax.local_devices(backend=platform)
    jax.config.update("jax_default_device", devices[int(index or 0)])
  except (RuntimeError, ValueError, IndexError):
    return (f"--device {device}: not available to JAX here; running on "
            f"{jax.local_devices()[0].platform}")
  return None


def list_images(inputs: list[str]) -> list[str]:
  """Image files of ``inputs`` (files as given, directories sorted, not recursive)."""
  out = []
  for path in inputs:
    if storage.isdir(path):
      out.extend(storage.join(path, n) for n in storage.listdir(path)
                 if n.lower().endswith(IMAGE_EXTS))
    elif storage.isfile(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"--images: no such file or directory: {path}")
  return out


def write_overlay(image, records, path):
  """Atomically writes the PNG of ``records``' masks tinted over ``image``."""
  from samjax.inference.mask_io import decode_rle
  from samjax.inference.visualize import overlay_masks
  by_area = sorted(records, key=lambda r: -r["area"])[:255]
  img = overlay_masks(image, [decode_rle(r["segmentation"]) for r in by_area])
  with atomic_io.atomic_writer(path) as f:
    img.save(f, format="PNG")


@dataclasses.dataclass
class _Task:
  """One image with something left to write."""
  path: str
  stem: str
  masks: bool              # the JSON (and overlay) must be made; else only the copy
  why: str | None = None   # what was wrong with earlier outputs (None: none existed)


def _remove_temp_files(out: str, stems) -> int:
  """Deletes temp files a killed run left for this run's outputs; their count.

  Only ``<stem>.{json,jpg,png}.tmp-*`` of the stems being processed, so no
  other file in ``--out`` is touched. A bucket has none: its writes spool
  locally and upload whole objects.
  """
  if storage.is_remote(out):
    return 0
  n = 0
  for entry in storage.listdir(out):
    m = _TEMP_FILE.fullmatch(entry)
    if m and m.group(1) in stems:
      with contextlib.suppress(FileNotFoundError):
        storage.remove(storage.join(out, entry), missing_ok=False)
        n += 1
  return n


def _plan(paths, out: str, copy_images: bool, official_rle: bool | None = None,
          owns=lambda position: True):
  """Sorts this process's inputs: (tasks, number already complete, failures,
  their stems).

  ``official_rle``: None for SA-1B output, else the official layout (RLE
  JSON if True, PNG folder if False). ``owns(position)``: whether the input
  at that position of ``paths`` is this process's (``process_split``); names
  are checked for collisions over all of ``paths``, so the first of two
  same-named inputs wins whatever the number of processes.
  """
  tasks, failed, seen, mine = [], [], {}, set()
  done = 0
  for position, p in enumerate(paths):
    name = storage.basename(p)
    stem = storage.splitext(name)[0]
    if stem in seen:
      if owns(position):
        failed.append((p, f"same name as {seen[stem]} (outputs would collide)"))
      continue
    seen[stem] = p
    if not owns(position):
      continue
    mine.add(stem)
    if official_rle is not None:
      finished, why = amg_official.problem(out, stem, official_rle)
      if finished:
        done += 1
      else:
        tasks.append(_Task(p, stem, True, why))
      continue
    doc, why = record_problem(storage.join(out, stem + ".json"), name)
    if doc is None:
      tasks.append(_Task(p, stem, True, why))
      continue
    if copy_images and name.lower().endswith(COPY_EXTS):
      image = doc["image"]
      why = copy_problem(storage.join(out, stem + ".jpg"), p, image["width"],
                         image["height"])
      if why is not None:
        tasks.append(_Task(p, stem, False, why))
        continue
    done += 1
  return tasks, done, failed, mine


def run(args) -> int:
  paths, official = _check_args(args)
  group = process_group.join()
  with group.reporting_errors("amg"):
    summary = _run_share(args, paths, official, group)
  return _exit_status(group.exchange("amg", summary), group, len(paths))


def _run_share(args, paths: list[str], official: bool, group) -> dict:
  """Labels this process's share of ``paths``; its summary (counts)."""
  tasks, done_before, failed, stems = _plan(
      paths, args.out, args.copy_images, args.convert_to_rle if official else None,
      group.owns)
  # "process k/N: " on every line of a process of several, so that logs
  # gathered from all hosts say whose they are.
  who = f"{group.label}: " if group.several else ""
  if group.several:
    mine = sum(group.owns(i) for i in range(len(paths)))
    print(f"samjax amg: {who}{mine} of {len(paths)} images ({done_before} already done, "
          f"{len(tasks)} to do)", file=sys.stderr, flush=True)
  removed = _remove_temp_files(args.out, stems)
  if removed:
    print(f"samjax amg: {who}removed {removed} temp file(s) of an interrupted run",
          file=sys.stderr)
  gen = _make_generator(args, official) if any(t.masks for t in tasks) else None
  ok, n_masks, redone, recopied = _label(tasks, gen, args, official, failed,
                                         group.label if group.several else None)
  summary = {"labelled": ok, "recopied": recopied, "done_before": done_before,
             "failed": len(failed)}
  if not tasks and not failed:
    print(f"{who}all {done_before} image(s) already done in {args.out}")
    return summary
  print(f"{who}{ok} image(s) labelled ({n_masks} masks; {redone} redone), {recopied} image "
        f"copies repaired, {done_before} already done, {len(failed)} failed -> {args.out}")
  for path, why in failed:
    print(f"  {who}failed: {path}: {why}", file=sys.stderr)
  return summary


def _exit_status(summaries: list[dict], group, total: int) -> int:
  """1 when any process stopped on an error, or when no image at all could
  be processed (one process's rule, over the union of the shares); else 0.
  Every process of a run returns the same status."""
  for index, error in process_group.failures(summaries):
    if index != group.index:
      print(f"samjax amg: process {index}/{group.count} stopped: {error} (rerun the same "
            "command, on any number of processes, to finish its images)", file=sys.stderr)
  if process_group.failures(summaries):
    return 1
  processed = sum(s["labelled"] + s["recopied"] + s["done_before"] for s in summaries)
  if group.several and group.index == 0:
    print(f"{group.count} processes: {processed} of {total} images done, "
          f"{sum(s['failed'] for s in summaries)} failed")
  return 1 if processed == 0 else 0


def _check_args(args) -> tuple[list[str], bool]:
  """(the input images, whether the output is the official layout), after
  checking the flags and creating ``--out``; ValueError (one line) on bad
  flags, no images or an ``--out`` that cannot be made."""
  paths = list_images(args.images)
  if not paths:
    raise ValueError(f"--images: no image files ({', '.join(IMAGE_EXTS)}) in {args.images}")
  try:
    atomic_io.ensure_dir(args.out)
  except OSError as e:
    raise ValueError(f"--out {args.out}: {e.strerror or e}") from e
  official = args.output_format == "official"
  if official and (args.overlays or args.copy_images):
    raise ValueError("--overlays and --copy-images go with --output-format sa1b")
  if args.convert_to_rle and not official:
    print("samjax amg: note: --convert-to-rle changes nothing for --output-format sa1b "
          "(SA-1B JSON always holds COCO RLE); add --output-format official for the "
          "official JSON lists", file=sys.stderr)
  return paths, official


def _make_generator(args, official: bool):
  """Loads the model (on ``--device``) into the mask generator the flags
  describe; binary masks for the official PNG folders, else COCO RLE."""
  from samjax import SamAutomaticMaskGenerator, load_sam
  note = select_device(args.device)
  if note:
    print(f"samjax amg: note: {note}", file=sys.stderr)
  binary = official and not args.convert_to_rle
  return SamAutomaticMaskGenerator(
      load_sam(args.checkpoint, MODEL_TYPES.get(args.variant, args.variant)),
      points_per_batch=args.points_per_batch, **generator_kwargs(args),
      output_mode="binary_mask" if binary else "coco_rle")


def _label(tasks: list[_Task], gen, args, official: bool, failed: list,
           label: str | None = None) -> tuple[int, int, int, int]:
  """Does every task (with a progress bar, named ``label``: "process k/N");
  unreadable images are appended to ``failed``. Returns (images labelled,
  masks written, images redone, copies repaired); an OSError writing outputs
  stops the run."""
  from tqdm import tqdm

  from samjax.inference.image_io import decode_image_file
  ok = n_masks = redone = recopied = 0
  who = f"{label}: " if label else ""
  bar = tqdm(tasks, desc=label, unit="img", disable=args.no_progress or not tasks,
             file=sys.stderr)
  for task in bar:
    path = task.path
    name = storage.basename(path)
    bar.set_postfix_str(name)
    if task.why:
      tqdm.write(f"samjax amg: {who}redoing {name}: {task.why}", file=sys.stderr)
    try:
      decoded = decode_image_file(path)
    except (ValueError, FileNotFoundError) as e:
      failed.append((path, str(e)))
      tqdm.write(f"samjax amg: {who}skipped {path}: {e}", file=sys.stderr)
      continue
    try:
      records = _write_outputs(task, decoded, gen, args, official)
    except OSError as e:
      raise OSError(e.errno, f"cannot write the outputs of {name} in {args.out}: "
                    f"{e.strerror or e} ({ok + recopied} image(s) finished in this run; "
                    "rerun to resume)") from e
    if records is None:
      recopied += 1
      continue
    ok += 1
    redone += task.why is not None
    n_masks += len(records)
  return ok, n_masks, redone, recopied


def _write_outputs(task: _Task, decoded, gen, args, official: bool) -> list | None:
  """Writes one image's outputs; returns the generator's records, or None
  when the task only repairs the image copy."""
  name = storage.basename(task.path)
  # Order matters: the JSON is the completion marker, so it is written
  # last; every write is atomic, so a kill at any moment leaves each file
  # whole or absent, and an image without its JSON is redone.
  if args.copy_images and name.lower().endswith(COPY_EXTS):
    write_copy(task.path, storage.join(args.out, task.stem + ".jpg"), decoded)
  if not task.masks:
    return None
  records = gen.generate(decoded.rgb)
  if official:
    amg_official.write(records, args.out, task.stem, args.convert_to_rle)
  else:
    if args.overlays:
      write_overlay(decoded.rgb, records, storage.join(args.out, task.stem + ".png"))
    atomic_io.write_json(storage.join(args.out, task.stem + ".json"),
                         sa1b_record(records, name, *decoded.rgb.shape[:2]))
  return records

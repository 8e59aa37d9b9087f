"""``samjax data ...``: build, convert and inspect SA-1B-format datasets (and
convert COCO-format instance datasets into them).

A problem the user can fix (a bad argument, a missing input, an output
folder that cannot be written, inputs holding no images) ends a verb with
one line on stderr and exit status 1, never a traceback or a silent success.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

HELP = """\
SA-1B data tools (COCO-format instance datasets convert into the same records).
Every DIR, tar and JSON may be local or in a bucket (gs://bucket/..., s3://bucket/...).

  samjax data make-sample --out DIR [--images 8 --per-tar 4 --height 240 --width 360]
      writes a small deterministic dataset in exact SA-1B layout (tar shards of
      sa_<id>.jpg + sa_<id>.json, COCO RLE) from scikit-image's photographs.
      --height 1500 --width 2250 --objects 34 gives SA-1B-sized images (~100 masks).
  samjax data convert --src DIR_OR_TARS... --out DIR --shards N --workers K
      validates the inputs and writes TFRecord shards of tf.train.Example
      (original JPEG bytes, RLE strings, boxes, scores, points), an offset
      index per shard and DIR/manifest.json. Bad inputs are skipped and listed
      with reasons; inputs without a single image are an error, and so is
      N above the number of images. K >= 1 processes convert (1: no worker
      processes); workers exit if the converter is killed.
      Every file is written atomically (temp file, fsync, rename; in a bucket
      one object uploaded whole). A bucket that still fails after retries
      stops the run in one line; it never turns inputs into skips. Rerunning
      resumes: a shard is kept only if its files match the sizes and sha256s
      its done.json recorded for these inputs, otherwise it is rewritten; the
      result is byte-identical to an uninterrupted run.
      --overwrite (when DIR holds a conversion of other inputs or shard count)
      deletes that conversion's files and nothing else: manifest.json,
      plan.json, sa1b-*-of-*.tfrecord, .tfrecord.idx, .done.json and their
      temp files; other files in DIR are never touched.
      By default each record also stores training-resolution copies next to
      the originals (the image re-encoded at --train-size 1024 on its longest
      side, quality 95, and the masks as RLEs at --train-gt-size 256), so
      training skips the full-size decode + resize; 0 turns a copy off
      (~+65% bytes for SA-1B).
  samjax data convert --coco instances.json --images DIR --out OUT --shards N
      the same for a COCO-format instance dataset (polygons, uncompressed or
      compressed RLE; see docs/data_coco.md): one record per image, polygons
      rasterised exactly as pycocotools' annToMask, one point per mask (its
      pixel farthest from the boundary). Crowd regions, empty masks,
      degenerate polygons, unknown categories, missing/undecodable images and
      images of another size than the JSON says are skipped and listed;
      --coco-keep-crowd keeps crowd regions as masks.
  samjax data inspect DIR
      prints the manifest summary, checks every CRC and the index of each shard
      (--quick: sizes only), and shows the first record.
"""


def register(subparsers):
  p = subparsers.add_parser("data", help="SA-1B sample data, TFRecord conversion, inspection",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.set_defaults(extra="data")  # samjax.cli checks the extra's packages first
  sub = p.add_subparsers(dest="data_verb", metavar="SUBVERB")
  sub.required = True

  s = sub.add_parser("make-sample", help="write a small SA-1B-layout dataset")
  s.add_argument("--out", required=True, help="output directory for the tar files")
  s.add_argument("--images", type=int, default=8, help="number of images")
  s.add_argument("--per-tar", type=int, default=4, help="images per tar file")
  s.add_argument("--height", type=int, default=240)
  s.add_argument("--width", type=int, default=360)
  s.add_argument("--objects", type=int, default=6,
                 help="composited objects per image (3 nested masks each)")
  s.add_argument("--object-size", type=float, nargs=2, default=(0.06, 0.35),
                 metavar=("MIN", "MAX"),
                 help="object height range as a fraction of the shorter image side")
  s.add_argument("--subpart-size", type=float, default=0.18,
                 help="subpart disc radius as a fraction of its object's shorter side")
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--quality", type=int, default=90, help="JPEG quality")
  s.set_defaults(func=run_make_sample)

  c = sub.add_parser("convert", help="SA-1B tars or COCO JSON -> TFRecord shards + index "
                                     "+ manifest")
  inputs = c.add_mutually_exclusive_group(required=True)
  inputs.add_argument("--src", nargs="+", metavar="PATH",
                      help="SA-1B tar files and/or directories holding them (or loose "
                           "jpg/json)")
  inputs.add_argument("--coco", metavar="JSON",
                      help="a COCO-format instance JSON (instead of --src; needs --images)")
  c.add_argument("--images", metavar="DIR",
                 help="with --coco: the folder its images' file_name (or coco_url) are under")
  c.add_argument("--coco-keep-crowd", action="store_true",
                 help="with --coco: keep iscrowd=1 regions as masks (default: skip them)")
  c.add_argument("--out", required=True, help="output directory")
  c.add_argument("--shards", type=int, required=True,
                 help="number of output shards (at most the number of images)")
  c.add_argument("--workers", type=int, default=1,
                 help="processes converting shards, >= 1 (1: in this process)")
  c.add_argument("--only-shards", type=_int_list, default=None, metavar="I,J,...",
                 help="write only these shard indices (split a conversion over machines)")
  c.add_argument("--overwrite", action="store_true",
                 help="replace a conversion of different inputs in --out (deletes only its "
                      "manifest/plan/shard/index/done files, never other files)")
  c.add_argument("--no-progress", action="store_true", help="no progress bar")
  c.add_argument("--train-size", type=int, default=1024,
                 help="also store the image resized to this longest side (0: no copy)")
  c.add_argument("--train-gt-size", type=int, default=256,
                 help="also store the masks as RLEs at this GT resolution (0: no copy)")
  c.add_argument("--train-quality", type=int, default=95,
                 help="JPEG quality of the stored training-size image")
  c.set_defaults(func=run_convert)

  i = sub.add_parser("inspect", help="summarise and verify a converted directory")
  i.add_argument("dir", help="output directory of `samjax data convert`")
  i.add_argument("--quick", action="store_true", help="skip the CRC pass")
  i.set_defaults(func=run_inspect)


def _int_list(s: str) -> list[int]:
  try:
    return [int(x) for x in s.split(",") if x.strip()]
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from e


def _error(args, message: str) -> int:
  print(f"samjax data {args.data_verb}: error: {message}", file=sys.stderr)
  return 1


def _one_line_errors(run):
  """Turns the errors a user can fix into one line on stderr and exit status 1."""

  @functools.wraps(run)
  def wrapped(args) -> int:
    try:
      return run(args)
    except OSError as e:  # unwritable --out, a file in the way, a missing input
      if e.filename is not None and e.strerror:
        return _error(args, f"{e.filename}: {e.strerror}")
      return _error(args, str(e))
    except ValueError as e:  # bad arguments, no images, conversion of other inputs
      return _error(args, str(e))

  return wrapped


@_one_line_errors
def run_make_sample(args) -> int:
  from data_pipelines import sample_data
  t0 = time.time()
  paths = sample_data.make_sample(args.out, num_images=args.images,
                                  images_per_tar=args.per_tar, height=args.height,
                                  width=args.width, num_objects=args.objects,
                                  seed=args.seed, quality=args.quality, progress=True,
                                  object_size=tuple(args.object_size),
                                  subpart_size=args.subpart_size)
  print(f"wrote {args.images} images in {len(paths)} tar file(s) to {args.out} "
        f"in {time.time() - t0:.1f}s")
  return 0


@_one_line_errors
def run_convert(args) -> int:
  from data_pipelines import coco, sa1b_to_tfrecord, train_copy
  t0 = time.time()
  coco_src = None
  if args.coco is not None:
    if not args.images:
      return _error(args, "--coco needs --images DIR (the folder holding its images)")
    coco_src = coco.Input(args.coco, args.images, keep_crowd=args.coco_keep_crowd)
  elif args.images or args.coco_keep_crowd:
    return _error(args, "--images and --coco-keep-crowd go with --coco, not --src")
  copy = train_copy.TrainCopyConfig(args.train_size, args.train_gt_size, args.train_quality)
  manifest = sa1b_to_tfrecord.convert(
      args.src, args.out, args.shards, workers=args.workers, only_shards=args.only_shards,
      overwrite=args.overwrite, progress=not args.no_progress, copy=copy, coco_src=coco_src)
  if manifest is not None:
    for s in manifest["skipped"][:20]:
      where = f"{s['source']}:{s['member']}" if s["member"] else s["source"]
      print(f"  skipped {where}: {s['kind']}: {s['reason']}")
    if len(manifest["skipped"]) > 20:
      print(f"  ... {len(manifest['skipped']) - 20} more in {args.out}/manifest.json")
    redone = (manifest.get("coco") or {}).get("reencoded", [])
    if redone:
      print(f"  re-encoded {len(redone)} image(s) as JPEG (not JPEG, or stored rotated); "
            f"listed in {args.out}/manifest.json")
    if manifest["num_records"] == 0:
      return _error(args, f"no usable images: all {manifest['num_images_scanned']} were "
                          f"skipped (reasons above and in {args.out}/manifest.json)")
  print(f"done in {time.time() - t0:.1f}s")
  return 0


@_one_line_errors
def run_inspect(args) -> int:
  from data_pipelines import verify
  report, ok = verify.inspect(args.dir, check_crc=not args.quick)
  print(report)
  return 0 if ok else 1

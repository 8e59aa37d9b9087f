"""``samjax segment``: prompt-based segmentation of one image from the command line."""

from __future__ import annotations

import argparse
import time

import numpy as np

from data_pipelines import atomic_io, storage

HELP = """\
Segment one image with point and/or box prompts.

  samjax segment --checkpoint sam_vit_b.pth --image photo.jpg \\
      --point 500,375 --point 620,380,0 --box 420,300,760,560 --out out.png --json out.json

Points are x,y[,label] in original image pixels (label 1 = foreground,
default; 0 = background); the box is x0,y0,x1,y1. --multimask returns the
three ambiguity-aware masks (one panel each in the PNG, best first); without it
a single mask. --json writes the masks as COCO RLE with predicted IoU, area
and bbox (xywh).

The image is read like `samjax amg` reads images (EXIF orientation applied,
16-bit scaled, alpha composited over white). Output paths are checked before
the model runs; both files are written atomically (a kill leaves each one
whole or absent, never truncated). Exit status 1 with a one-line error when
anything fails; 0 only when every requested file was written. Every path
(--checkpoint, --image, --out, --json) may be local, gs:// or s3://.
"""


def _floats(text: str, n_min: int, n_max: int, what: str):
  try:
    vals = [float(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"{what} {text!r}: expected comma-separated numbers") from None
  if not n_min <= len(vals) <= n_max:
    raise argparse.ArgumentTypeError(f"{what} {text!r}: expected {n_min}-{n_max} numbers")
  return vals


def parse_point(text: str):
  vals = _floats(text, 2, 3, "--point")
  label = int(vals[2]) if len(vals) == 3 else 1
  if len(vals) == 3 and (vals[2] not in (0.0, 1.0)):
    raise argparse.ArgumentTypeError(f"--point {text!r}: label must be 0 or 1")
  return (vals[0], vals[1], label)


def parse_box(text: str):
  return _floats(text, 4, 4, "--box")


def register(subparsers):
  p = subparsers.add_parser("segment", help="segment an image from point/box prompts",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="official .pth or samjax model directory")
  p.add_argument("--variant", help="expected model size (inferred if omitted)")
  p.add_argument("--image", required=True, help="image file (any format PIL reads)")
  p.add_argument("--point", action="append", type=parse_point, default=[],
                 metavar="X,Y[,LABEL]", help="point prompt; repeat for several")
  p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box prompt")
  p.add_argument("--multimask", action="store_true", help="return 3 masks")
  p.add_argument("--out", required=True, help="PNG overlay to write")
  p.add_argument("--json", help="also write masks as COCO RLE + scores here")
  p.set_defaults(func=run)


def check_output_file(path: str, flag: str, image: bool = False) -> str | None:
  """Fails now, before the model runs, if ``path`` cannot become the output:
  it is a folder, has no image extension PIL writes (``image``), or its
  folder cannot be created or written. Returns the PIL format if ``image``.

  Creates the folder (nothing to create on a bucket: there it checks the
  bucket exists), nothing else.
  """
  from PIL import Image
  if storage.isdir(path):
    raise ValueError(f"{flag} {path}: is a folder; give a file name inside it")
  fmt = None
  if image:
    ext = storage.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
      raise ValueError(f"{flag} {path}: cannot tell an image format from the extension "
                       f"{ext or '(none)'!r}; use e.g. .png")
  folder = storage.dirname(storage.resolve(path))
  try:
    atomic_io.ensure_dir(folder)
  except OSError as e:
    raise ValueError(f"{flag} {path}: cannot write there: {e.filename}: "
                     f"{e.strerror or e}") from e
  return fmt


def run(args) -> int:
  from samjax.inference import validation
  from samjax.inference.image_io import read_image
  from samjax.inference.mask_io import encode_rle, mask_bbox_xywh
  from samjax.inference.visualize import overlay_masks, side_by_side
  if not args.point and args.box is None:
    raise ValueError("give at least one --point or a --box")
  # Every check that can fail runs before the model is loaded and run, so a
  # typo in an output path costs seconds, not a forward pass.
  out_format = check_output_file(args.out, "--out", image=True)
  if args.json:
    check_output_file(args.json, "--json")
    if storage.resolve(args.json) == storage.resolve(args.out):
      raise ValueError(f"--json {args.json}: the same file as --out")
  image = read_image(args.image)
  coords = labels = None
  if args.point:
    coords = np.array([p[:2] for p in args.point], np.float64)
    labels = np.array([p[2] for p in args.point], np.int32)
  box = None if args.box is None else np.array(args.box)
  # The predictor takes prompts outside the image (as officially); on a
  # command line they are typos.
  validation.check_inside(coords, labels, box, image.shape[:2])
  from samjax import SamPredictor, load_sam
  t0 = time.time()
  predictor = SamPredictor(load_sam(args.checkpoint, args.variant))
  t1 = time.time()
  predictor.set_image(image)
  t2 = time.time()
  masks, scores, _ = predictor.predict(coords, labels, box,
                                       multimask_output=args.multimask)
  t3 = time.time()
  order = np.argsort(-scores)
  panels = [overlay_masks(image, [masks[i]], points=coords, labels=labels, boxes=box,
                          captions=[f"mask {i}: predicted IoU {scores[i]:.3f}"])
            for i in order]
  # Atomic writes: a kill or a full disk leaves each output whole (new or
  # the previous one) or absent, never a truncated file.
  with atomic_io.atomic_writer(args.out) as f:
    side_by_side(panels).save(f, format=out_format)
  if args.json:
    record = {
        "image": {"file_name": storage.basename(args.image), "height": image.shape[0],
                  "width": image.shape[1]},
        "checkpoint": args.checkpoint,
        "prompts": {"point_coords": None if coords is None else coords.tolist(),
                    "point_labels": None if labels is None else labels.tolist(),
                    "box": args.box},
        "annotations": [{"id": int(i), "segmentation": encode_rle(masks[i]),
                         "area": int(masks[i].sum()), "bbox": mask_bbox_xywh(masks[i]),
                         "predicted_iou": float(scores[i])} for i in order],
    }
    atomic_io.write_json(args.json, record)
  print(f"{len(masks)} mask(s), predicted IoU {np.round(scores[order], 3).tolist()} -> "
        f"{args.out}{' + ' + args.json if args.json else ''} (load {t1 - t0:.1f}s, "
        f"embed {t2 - t1:.1f}s, decode {t3 - t2:.2f}s)")
  return 0

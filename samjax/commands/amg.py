"""``samjax amg``: label a folder of images automatically (SA-1B format JSON)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import zlib

HELP = """\
Fully automatic masks for every image (SAM's data engine), one SA-1B-format
JSON per image, ready for `samjax data convert`.

  samjax amg --checkpoint sam_vit_b.pth --images photos/ --out labels/ \\
      [--points-per-side 32] [--crop-n-layers 1] [--overlays] [--copy-images]

--images takes directories (their image files, not recursive) and/or files.
For each image <stem>.<ext>, --out gets <stem>.json:
  {"image": {"image_id", "width", "height", "file_name"},
   "annotations": [{"id", "segmentation": COCO RLE, "bbox": [x, y, w, h],
                    "area", "predicted_iou", "stability_score",
                    "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}
image_id is N for files named sa_N.*, else a CRC32 of the file name.
--copy-images puts the JPEG beside its JSON (the layout the converter reads);
--overlays writes <stem>.png with the masks tinted.

Resumable: images whose JSON exists are skipped (JSONs are written
atomically), so rerun the same command after an interruption. Unreadable
images are reported and skipped. Exit status is non-zero (1) only if
nothing could be processed; failures next to successes are listed at the end.
"""

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register(subparsers):
  p = subparsers.add_parser("amg", help="automatic masks for a folder of images (SA-1B JSON)",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="official .pth or samjax model directory")
  p.add_argument("--variant", help="expected model size (inferred if omitted)")
  p.add_argument("--images", required=True, nargs="+", metavar="DIR_OR_FILE",
                 help="image files and/or directories of images")
  p.add_argument("--out", required=True, help="output directory for the JSONs")
  g = p.add_argument_group("generator settings (official names and defaults)")
  g.add_argument("--points-per-side", type=int, default=32)
  g.add_argument("--points-per-batch", type=int, default=128,
                 help="points decoded per jitted call (multiple of 4)")
  g.add_argument("--pred-iou-thresh", type=float, default=0.88)
  g.add_argument("--stability-score-thresh", type=float, default=0.95)
  g.add_argument("--stability-score-offset", type=float, default=1.0)
  g.add_argument("--box-nms-thresh", type=float, default=0.7)
  g.add_argument("--crop-n-layers", type=int, default=0)
  g.add_argument("--crop-nms-thresh", type=float, default=0.7)
  g.add_argument("--crop-overlap-ratio", type=float, default=512 / 1500)
  g.add_argument("--crop-n-points-downscale-factor", type=int, default=1)
  g.add_argument("--min-mask-region-area", type=int, default=0)
  p.add_argument("--overlays", action="store_true", help="also write <stem>.png overlays")
  p.add_argument("--copy-images", action="store_true",
                 help="copy JPEG inputs into --out (SA-1B layout for `samjax data convert`)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)


def list_images(inputs: list[str]) -> list[str]:
  """Image files of ``inputs`` (files as given, directories sorted, not recursive)."""
  out = []
  for path in inputs:
    if os.path.isdir(path):
      out.extend(os.path.join(path, n) for n in sorted(os.listdir(path))
                 if n.lower().endswith(IMAGE_EXTS))
    elif os.path.isfile(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"--images: no such file or directory: {path}")
  return out


def image_id(file_name: str) -> int:
  """N for ``sa_N.*`` (SA-1B names), else a stable CRC32 of the file name."""
  m = re.fullmatch(r"sa_(\d+)", os.path.splitext(file_name)[0])
  return int(m.group(1)) if m else zlib.crc32(file_name.encode("utf-8"))


def sa1b_record(records: list[dict], file_name: str, height: int, width: int) -> dict:
  """Generator records (output_mode='coco_rle') -> one SA-1B JSON document."""
  return {
      "image": {"image_id": image_id(file_name), "width": width, "height": height,
                "file_name": file_name},
      "annotations": [dict(id=i, segmentation=r["segmentation"], bbox=r["bbox"],
                           area=r["area"], predicted_iou=r["predicted_iou"],
                           stability_score=r["stability_score"], crop_box=r["crop_box"],
                           point_coords=r["point_coords"]) for i, r in enumerate(records)],
  }


def _overlay(image, records, path):
  from samjax.inference.mask_io import decode_rle
  from samjax.inference.visualize import overlay_masks
  by_area = sorted(records, key=lambda r: -r["area"])[:255]
  overlay_masks(image, [decode_rle(r["segmentation"]) for r in by_area]).save(path)


def run(args) -> int:
  from tqdm import tqdm

  from data_pipelines import atomic_io
  from samjax import SamAutomaticMaskGenerator, load_sam
  from samjax.inference.image_io import read_image
  paths = list_images(args.images)
  if not paths:
    raise ValueError(f"--images: no image files ({', '.join(IMAGE_EXTS)}) in {args.images}")
  os.makedirs(args.out, exist_ok=True)
  todo, failed, seen = [], [], {}
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0]
    if stem in seen:
      failed.append((p, f"same name as {seen[stem]} (outputs would collide)"))
      continue
    seen[stem] = p
    if not os.path.exists(os.path.join(args.out, stem + ".json")):
      todo.append((p, stem))
  done_before = len(seen) - len(todo)
  if not todo:
    print(f"all {done_before} image(s) already done in {args.out}")
    return 0
  gen = SamAutomaticMaskGenerator(
      load_sam(args.checkpoint, args.variant), points_per_side=args.points_per_side,
      points_per_batch=args.points_per_batch, pred_iou_thresh=args.pred_iou_thresh,
      stability_score_thresh=args.stability_score_thresh,
      stability_score_offset=args.stability_score_offset,
      box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers,
      crop_nms_thresh=args.crop_nms_thresh, crop_overlap_ratio=args.crop_overlap_ratio,
      crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
      min_mask_region_area=args.min_mask_region_area, output_mode="coco_rle")
  ok = n_masks = 0
  bar = tqdm(todo, unit="img", disable=args.no_progress, file=sys.stderr)
  for path, stem in bar:
    bar.set_postfix_str(os.path.basename(path))
    try:
      image = read_image(path)
    except (ValueError, FileNotFoundError) as e:
      failed.append((path, str(e)))
      tqdm.write(f"samjax amg: skipped {path}: {e}", file=sys.stderr)
      continue
    records = gen.generate(image)
    name = os.path.basename(path)
    # Atomic: a JSON that exists is complete, which is what resuming trusts.
    atomic_io.write_json(os.path.join(args.out, stem + ".json"),
                         sa1b_record(records, name, *image.shape[:2]))
    if args.copy_images and name.lower().endswith((".jpg", ".jpeg")):
      dst = os.path.join(args.out, stem + ".jpg")
      if not os.path.exists(dst):
        shutil.copyfile(path, dst)
    if args.overlays:
      _overlay(image, records, os.path.join(args.out, stem + ".png"))
    ok += 1
    n_masks += len(records)
  print(f"{ok} image(s) labelled ({n_masks} masks), {done_before} already done, "
        f"{len(failed)} failed -> {args.out}")
  for path, why in failed:
    print(f"  failed: {path}: {why}", file=sys.stderr)
  return 1 if ok == 0 and done_before == 0 else 0

"""The official ``scripts/amg.py`` (segment-anything), transcribed for tests.

The script is not part of the installed ``segment_anything`` package, so its
public code path is written out here: the same argument parser, model
loading through ``sam_model_registry``, ``.to(device)``, the generator, the
folder walk with OpenCV decoding, and the two output layouts (a folder of
``N.png`` + ``metadata.csv`` per image, or a JSON list of RLE records).

``run(package, argv)`` runs it against ``package``, the module the script
imports ``SamAutomaticMaskGenerator`` and ``sam_model_registry`` from: the
official ``segment_anything`` or ``samjax.segment_anything`` - the one line
a user migrating changes.
"""

from __future__ import annotations

import argparse
import json
import os


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description="Runs automatic mask generation.")
  parser.add_argument("--input", type=str, required=True)
  parser.add_argument("--output", type=str, required=True)
  parser.add_argument("--model-type", type=str, required=True)
  parser.add_argument("--checkpoint", type=str, required=True)
  parser.add_argument("--device", type=str, default="cuda")
  parser.add_argument("--convert-to-rle", action="store_true")
  amg = parser.add_argument_group("AMG Settings")
  for name, kind in [("points-per-side", int), ("points-per-batch", int),
                     ("pred-iou-thresh", float), ("stability-score-thresh", float),
                     ("stability-score-offset", float), ("box-nms-thresh", float),
                     ("crop-n-layers", int), ("crop-nms-thresh", float),
                     ("crop-overlap-ratio", float), ("crop-n-points-downscale-factor", int),
                     ("min-mask-region-area", int)]:
    amg.add_argument(f"--{name}", type=kind, default=None)
  return parser


def write_masks_to_folder(masks, path: str) -> None:
  import cv2
  header = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
            "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")
  metadata = [header]
  for i, mask_data in enumerate(masks):
    mask = mask_data["segmentation"]
    cv2.imwrite(os.path.join(path, f"{i}.png"), mask * 255)
    mask_metadata = [
        str(i),
        str(mask_data["area"]),
        *[str(x) for x in mask_data["bbox"]],
        *[str(x) for x in mask_data["point_coords"][0]],
        str(mask_data["predicted_iou"]),
        str(mask_data["stability_score"]),
        *[str(x) for x in mask_data["crop_box"]],
    ]
    metadata.append(",".join(mask_metadata))
  with open(os.path.join(path, "metadata.csv"), "w") as f:
    f.write("\n".join(metadata))


def get_amg_kwargs(args) -> dict:
  names = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
           "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
           "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area")
  return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def main(args, package) -> None:
  import cv2

  SamAutomaticMaskGenerator = package.SamAutomaticMaskGenerator
  sam_model_registry = package.sam_model_registry
  print("Loading model...")
  sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
  _ = sam.to(device=args.device)
  output_mode = "coco_rle" if args.convert_to_rle else "binary_mask"
  generator = SamAutomaticMaskGenerator(sam, output_mode=output_mode, **get_amg_kwargs(args))

  if not os.path.isdir(args.input):
    targets = [args.input]
  else:
    targets = [f for f in os.listdir(args.input)
               if not os.path.isdir(os.path.join(args.input, f))]
    targets = [os.path.join(args.input, f) for f in targets]
  os.makedirs(args.output, exist_ok=True)
  for t in targets:
    print(f"Processing '{t}'...")
    image = cv2.imread(t)
    if image is None:
      print(f"Could not load '{t}' as an image, skipping...")
      continue
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    masks = generator.generate(image)
    base = os.path.splitext(os.path.basename(t))[0]
    save_base = os.path.join(args.output, base)
    if output_mode == "binary_mask":
      os.makedirs(save_base, exist_ok=False)
      write_masks_to_folder(masks, save_base)
    else:
      with open(save_base + ".json", "w") as f:
        json.dump(masks, f)
  print("Done!")


def run(package, argv: list[str]) -> None:
  """``package``: any object with ``SamAutomaticMaskGenerator`` and
  ``sam_model_registry`` (a module, or a namespace adding a model type)."""
  main(build_parser().parse_args(argv), package)

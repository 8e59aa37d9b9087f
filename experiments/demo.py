"""The samjax demo (`make demo`): train SAM end to end on the built-in sample data.

  1. sample data in exact SA-1B layout (tar shards of jpg + json, COCO RLE),
     built from scikit-image photographs: a training and a held-out split;
  2. `samjax data convert` -> TFRecord shards (+ index, manifest);
  3. `samjax train --config tiny_demo` (experiments/configs/tiny_demo.py) on all local
     devices: held-out 1-click mIoU before training, progress, checkpoints,
     held-out mIoU after training;
  4. `samjax convert --to-torch` of the trained workdir -> a .pth plus the
     constructor arguments; the official segment_anything classes are built
     from them and load the weights with strict=True;
  5. `samjax segment`-style PNG of the trained model's masks on a held-out
     image (next to the ground truth).

Usage: python experiments/demo.py [--out demo_out] [--steps N]
About 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

# Square 256 px images with fewer, larger objects than make-sample's SA-1B-like
# default: the demo model predicts 64 px masks, where the default's smallest
# parts (360 x 240 images seen at 0.7x) would cover less than one output pixel.
DEMO_SHAPES = {"height": 256, "width": 256, "num_objects": 4, "object_size": (0.3, 0.6),
               "subpart_size": 0.3}


def make_log(tag: str):
  """A progress printer: ``[tag HH:MM:SS] msg``, flushed (the demos' logs)."""
  def log(msg):
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)
  return log


log = make_log("demo")


def run_cli(args, log=log):
  """Runs one ``samjax`` CLI verb in this process, logged; stops the demo if it fails."""
  from samjax.cli import main
  log("samjax " + " ".join(args))
  rc = main(args)
  if rc != 0:
    raise SystemExit(f"samjax {args[0]} failed with exit code {rc}")


def held_out_png(workdir, raw_eval_dir, out_png):
  """Trained-model masks for 3 clicks on one held-out image, next to the GT."""
  import tarfile

  from PIL import Image

  from samjax import SamPredictor, load_sam
  from samjax.inference.mask_io import decode_rle
  from samjax.inference.visualize import overlay_masks, side_by_side
  tar_path = sorted(os.path.join(raw_eval_dir, f) for f in os.listdir(raw_eval_dir)
                    if f.endswith(".tar"))[0]
  with tarfile.open(tar_path) as tf:
    names = sorted(m.name for m in tf.getmembers() if m.name.endswith(".jpg"))
    jpg = tf.extractfile(names[0]).read()
    meta = json.load(tf.extractfile(names[0][:-4] + ".json"))
  import io
  image = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
  anns = sorted(meta["annotations"], key=lambda a: -a["area"])
  objects = [a for a in anns if a["area"] < 0.5 * image.shape[0] * image.shape[1]][:3]
  predictor = SamPredictor(load_sam(workdir))
  predictor.set_image(image)
  pred_masks, gt_masks, points, ious = [], [], [], []
  rng = np.random.default_rng(0)
  for ann in objects:
    gt = decode_rle(ann["segmentation"])
    ys, xs = np.nonzero(gt)
    i = rng.integers(len(ys))
    point = np.array([[xs[i], ys[i]]], np.float64)
    masks, scores, _ = predictor.predict(point, np.array([1]))
    best = masks[np.argmax(scores)]
    ious.append((best & gt).sum() / max((best | gt).sum(), 1))
    pred_masks.append(best)
    gt_masks.append(gt)
    points.append(point[0])
  pts = np.array(points)
  gt_img = overlay_masks(image, gt_masks, points=pts, labels=np.ones(len(pts)),
                         captions=["ground truth"])
  pred_img = overlay_masks(image, pred_masks, points=pts, labels=np.ones(len(pts)),
                           captions=["trained model, 1 click each"])
  side_by_side([gt_img, pred_img]).save(out_png)
  return float(np.mean(ious))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default="demo_out")
  ap.add_argument("--steps", type=int, default=None, help="override total_steps")
  ap.add_argument("--train-images", type=int, default=512)
  ap.add_argument("--eval-images", type=int, default=32)
  args = ap.parse_args(argv)
  t0 = time.time()
  if os.path.isdir(args.out):
    shutil.rmtree(args.out)
  data = os.path.join(args.out, "data")
  from data_pipelines import sample_data
  for split, n, seed in (("train", args.train_images, 0), ("eval", args.eval_images, 1)):
    raw = os.path.join(data, f"raw_{split}")
    log(f"writing {n} {split} images in SA-1B layout to {raw}")
    sample_data.make_sample(raw, num_images=n, images_per_tar=64, seed=seed,
                            **DEMO_SHAPES)
    # The training copy sized for the demo model (256 px, 64 px masks).
    run_cli(["data", "convert", "--src", raw, "--out", os.path.join(data, split),
             "--shards", "2", "--workers", "1", "--no-progress",
             "--train-size", "256", "--train-gt-size", "64"])

  workdir = os.path.join(args.out, "train")
  train_args = ["train", "--config", "tiny_demo",
                "--workdir", workdir,
                f"--config.data.train_dir={os.path.join(data, 'train')}",
                f"--config.data.eval_dir={os.path.join(data, 'eval')}"]
  if args.steps:
    train_args.append(f"--config.total_steps={args.steps}")
  run_cli(train_args)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    final = json.load(f)

  pth = os.path.join(args.out, "sam_tiny_demo.pth")
  run_cli(["convert", "--to-torch", workdir, "--out", pth])
  import torch

  from samjax.interop import build_official_sam
  from samjax.model import SamConfig
  with open(pth + ".json") as f:
    sidecar = json.load(f)
  official = build_official_sam(SamConfig.from_dict(sidecar["samjax_config"]))
  official.load_state_dict(torch.load(pth, weights_only=True), strict=True)
  log(f"official segment_anything Sam built from {pth}.json "
      f"(embed_dim {sidecar['official_constructor_kwargs']['image_encoder']['embed_dim']}) "
      "loaded the trained weights with strict=True")

  png = os.path.join(args.out, "heldout_masks.png")
  miou = held_out_png(workdir, os.path.join(data, "raw_eval"), png)
  nan = float("nan")
  log(f"held-out 1-click mIoU (most confident of 3 masks): before training "
      f"{final.get('initial_iou_first', nan):.3f}, after training {final['iou_first']:.3f}")
  log(f"held-out 1-click oracle mIoU (best of 3): before "
      f"{final.get('initial_iou_first_oracle', nan):.3f}, after "
      f"{final['iou_first_oracle']:.3f}; after the last click: before "
      f"{final.get('initial_iou_last', nan):.3f}, after {final['iou_last']:.3f}")
  log(f"PNG of 3 held-out clicks (mIoU {miou:.3f}) -> {png}")
  log(f"done in {time.time() - t0:.0f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())

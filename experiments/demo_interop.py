"""The samjax demo: official checkpoint -> samjax -> inference -> official checkpoint.

No weights can be downloaded here, so the demo first writes a stand-in for
``sam_vit_b_01ec64.pth``: the official ``segment_anything`` ViT-B built with
seeded random weights, saved exactly as the official file is. Then it runs
what a user with the real file would run:

  1. samjax convert --from-torch sam_vit_b.pth --variant vit_b --out DIR
  2. embed a real photograph (scikit-image's astronaut) and decode a click
     and a box, checking the result against the official model on the same
     weights (numerical parity);
  3. samjax convert --to-torch DIR --out roundtrip.pth, loaded back by
     ``segment_anything.sam_model_registry['vit_b']`` (strict);
  4. writes a PNG overlay of the predicted masks.

Random weights give meaningless masks: the point is the plumbing and the
parity. Usage: python experiments/demo_interop.py --out demo_interop_out [--variant vit_b]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo import log


def overlay(image, masks, points, box, path):
  from PIL import Image, ImageDraw
  out = image.astype(np.float32)
  colors = np.array([[255, 64, 64], [64, 160, 255], [64, 255, 128]], np.float32)
  for mask, color in zip(masks, colors):
    out[mask] = 0.45 * out[mask] + 0.55 * color
  img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  for x, y in points:
    draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=(255, 255, 0), width=3)
  if box is not None:
    draw.rectangle(list(box), outline=(0, 255, 0), width=3)
  img.save(path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default="demo_interop_out")
  ap.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_tiny", "vit_small"])
  args = ap.parse_args(argv)

  import jax
  import skimage.data
  import torch

  from samjax.cli import main as samjax_cli
  from samjax.inference.transforms import (
    apply_boxes,
    apply_coords,
    postprocess_masks,
    resize_longest_side,
  )
  from samjax.interop import build_official_sam
  from samjax.interop.torch_io import save_state_dict
  from samjax.loading import load_config_and_params
  from samjax.model import Prompts, SamModel, get_config

  if os.path.isdir(args.out):
    shutil.rmtree(args.out)
  os.makedirs(args.out)
  cfg = get_config(args.variant)
  t_start = time.time()

  log(f"building the official segment_anything {args.variant} (seeded random weights) "
      "as a stand-in for the released checkpoint")
  torch.manual_seed(0)
  official = build_official_sam(cfg)
  pth = os.path.join(args.out, f"sam_{args.variant}_random.pth")
  save_state_dict({k: v.numpy() for k, v in official.state_dict().items()}, pth)

  model_dir = os.path.join(args.out, "samjax_model")
  cmd = ["convert", "--from-torch", pth, "--variant", args.variant, "--out", model_dir]
  log("samjax " + " ".join(cmd))
  if samjax_cli(cmd) != 0:
    return 1
  config, params = load_config_and_params(model_dir)
  model = SamModel(config)

  photo = skimage.data.astronaut()  # 512x512 RGB
  image = np.ascontiguousarray(photo[:, 40:480])  # a non-square crop: 512x440
  h, w = image.shape[:2]
  resized = resize_longest_side(image, config.image_size)
  chw = resized.transpose(2, 0, 1)[None].astype(np.float32)
  x = np.array(model.preprocess(chw))  # writable copy (torch.from_numpy below)

  log(f"embedding a {h}x{w} photograph with samjax (jit compile + run)")
  embed = jax.jit(model.embed_images)
  t0 = time.time()
  emb = np.asarray(embed(params, x))
  t_first = time.time() - t0
  t0 = time.time()
  emb = np.asarray(embed(params, x))
  t_jax = time.time() - t0
  t0 = time.time()
  with torch.no_grad():
    emb_ref = official.image_encoder(torch.from_numpy(x)).numpy()
  t_torch = time.time() - t0
  log(f"image embedding {emb.shape}: samjax {t_jax:.2f}s (first call {t_first:.1f}s), "
      f"official {t_torch:.2f}s; max |diff| = {np.abs(emb - emb_ref).max():.2e}")

  click = np.array([[[200.0, 150.0]]])  # (x, y) in the original image
  box = np.array([120.0, 60.0, 330.0, 300.0])
  coords = apply_coords(click, (h, w), config.image_size).astype(np.float32)
  box_in = apply_boxes(box[None], (h, w), config.image_size).astype(np.float32)
  prompts = Prompts.create(coords[None], np.ones((1, 1, 1), np.int32), box_in[None])
  logits, iou = model.decode(params, emb, prompts, multimask_output=True)
  with torch.no_grad():
    sparse, dense = official.prompt_encoder(
        points=(torch.from_numpy(coords), torch.ones(1, 1, dtype=torch.int)),
        boxes=torch.from_numpy(box_in), masks=None)
    ref_logits, _ = official.mask_decoder(
        torch.from_numpy(emb_ref), official.prompt_encoder.get_dense_pe(), sparse, dense, True)
  log(f"decoded a click + box: 3 masks, predicted IoU {np.round(np.asarray(iou)[0, 0], 3)}; "
      f"max |logit diff| vs official = "
      f"{np.abs(np.asarray(logits)[0] - ref_logits.numpy()).max():.2e}")

  rh, rw = resized.shape[:2]
  masks = np.asarray(postprocess_masks(np.asarray(logits)[0, 0], (rh, rw), (h, w),
                                       config.image_size)) > 0.0
  png = os.path.join(args.out, "masks.png")
  overlay(image, masks, click[0], box, png)

  back = os.path.join(args.out, "roundtrip.pth")
  cmd = ["convert", "--to-torch", model_dir, "--out", back]
  log("samjax " + " ".join(cmd))
  if samjax_cli(cmd) != 0:
    return 1
  if args.variant == "vit_b":
    from segment_anything import sam_model_registry
    reloaded = sam_model_registry["vit_b"](checkpoint=back)  # strict load_state_dict
  else:
    reloaded = build_official_sam(config)
    reloaded.load_state_dict(torch.load(back, weights_only=True), strict=True)
  same = all(torch.equal(reloaded.state_dict()[k], v) for k, v in official.state_dict().items())
  log(f"official model reloaded {back} strictly; every tensor identical: {same}")
  log(f"wrote {png} (masks from random weights: plumbing, not quality); "
      f"total {time.time() - t_start:.0f}s")
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())

"""Automatic mask generation: samjax SamAutomaticMaskGenerator vs the official one.

Same process, same weights (official ViT-B with seeded random weights,
converted), same photograph, same settings (32x32 grid, official defaults).
Reports seconds per image with and without the image encoder; samjax is
warmed up first (compilation reported separately), the official runs once
(it takes minutes on a 2-core CPU). Prints samjax's speed-up.

  python experiments/bench_amg.py [--variant vit_b] [--points-per-side 32]
  python experiments/bench_amg.py --write experiments/results
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Report, loaded_and_official, make_parser


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=1, runs_help="timed samjax runs (median)")
  ap.add_argument("--points-per-side", type=int, default=32)
  ap.add_argument("--crop-n-layers", type=int, default=0)
  ap.add_argument("--pred-iou-thresh", type=float, default=0.88)
  ap.add_argument("--stability-score-thresh", type=float, default=0.95)
  ap.add_argument("--points-per-batch", type=int, default=128,
                  help="samjax only (its default is the official 64; 128 is fewer "
                       "dispatches); the official runs its default")
  args = ap.parse_args(argv)

  import skimage.data
  import torch
  from segment_anything import SamAutomaticMaskGenerator as Official

  from samjax import SamAutomaticMaskGenerator

  loaded, official_sam = loaded_and_official(args.variant)
  settings = dict(points_per_side=args.points_per_side, crop_n_layers=args.crop_n_layers,
                  pred_iou_thresh=args.pred_iou_thresh,
                  stability_score_thresh=args.stability_score_thresh)
  ours = SamAutomaticMaskGenerator(loaded, **settings, points_per_batch=args.points_per_batch)
  official = Official(official_sam, **settings)
  image = skimage.data.coffee()  # 400x600 RGB photograph
  h, w = image.shape[:2]

  report = Report(f"bench_amg {args.variant}, {h}x{w} photograph (skimage coffee)",
                  f"torch threads: {torch.get_num_threads()}",
                  f"settings: {settings} (other arguments: official defaults; samjax "
                  f"points_per_batch={args.points_per_batch})")
  say = report.say

  t0 = time.perf_counter()
  ours.generate(image)
  say(f"samjax first call (compilation + run): {time.perf_counter() - t0:.1f} s")
  totals, encs, counts = [], [], []
  for _ in range(args.runs):
    recs = ours.generate(image)
    totals.append(ours.last_timings["total"])
    encs.append(ours.last_timings["encoder"])
    counts.append(len(recs))
  i = sorted(range(len(totals)), key=totals.__getitem__)[len(totals) // 2]
  o_total, o_enc = totals[i], encs[i]

  # Official: time the encoder inside its predictor.set_image.
  enc_time = [0.0]
  set_image = official.predictor.set_image

  def timed_set_image(*a, **k):
    t = time.perf_counter()
    set_image(*a, **k)
    enc_time[0] += time.perf_counter() - t
  official.predictor.set_image = timed_set_image
  t0 = time.perf_counter()
  with torch.no_grad():
    ref = official.generate(image)
  r_total, r_enc = time.perf_counter() - t0, enc_time[0]

  say("| | samjax | official | speed-up |")
  say("|---|---|---|---|")
  say(f"| per image, encoder included | {o_total:.2f} s | {r_total:.2f} s | "
      f"{r_total / o_total:.2f}x |")
  say(f"| per image, beyond the encoder | {o_total - o_enc:.2f} s | {r_total - r_enc:.2f} s | "
      f"{(r_total - r_enc) / (o_total - o_enc):.2f}x |")
  say(f"| encoder (set_image) | {o_enc:.2f} s | {r_enc:.2f} s | {r_enc / o_enc:.2f}x |")
  say(f"| masks returned | {counts[i]} | {len(ref)} | |")
  report.write(args.write, f"bench_amg_{args.variant}")


if __name__ == "__main__":
  main()

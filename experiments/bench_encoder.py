"""Image-encoder throughput: samjax (XLA) vs the official PyTorch encoder.

Same machine, same process, same weights (the official model is built with
random weights and converted), both using all cores. Prints images/s of
each, the ratio, and samjax's achieved FLOP/s (matmuls counted through loop
bodies) against XLA's measured matmul rate on the encoder's own shapes and on a
square product, and what ratio a samjax at 100% of that rate would reach.

  python experiments/bench_encoder.py                       # ViT-B, 1024x1024, fp32
  python experiments/bench_encoder.py --variant vit_tiny --runs 5
  python experiments/bench_encoder.py --write experiments/results  # commit the .md
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (
  Report,
  encoder_shapes_rate,
  make_parser,
  matmul_rate_gflops,
  median,
  official_and_samjax,
  program_flops,
  time_calls,
)


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=3,
                   runs_help="timed calls per implementation")
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--attention-impl", default="auto", help="auto | xla | chunked | cudnn")
  ap.add_argument("--query-chunk", type=int, default=None)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--skip-official", action="store_true")
  args = ap.parse_args(argv)

  import torch

  from samjax import build

  overrides = {"attention_impl": args.attention_impl, "dtype": args.dtype}
  if args.query_chunk:
    overrides["attention_query_chunk"] = args.query_chunk
  model = build(args.variant, **overrides)
  cfg = model.config
  official, params = official_and_samjax(cfg)
  params = jax.device_put(params)
  s = cfg.image_size
  images = np.random.default_rng(0).normal(size=(args.batch, 3, s, s)).astype(np.float32)

  report = Report(f"bench_encoder {args.variant} {s}x{s} batch {args.batch} {args.dtype}",
                  (f"torch threads: {torch.get_num_threads()}; samjax attention_impl: "
                   f"{cfg.attention_impl} (query chunk {cfg.attention_query_chunk})"))
  say = report.say

  embed = jax.jit(model.embed_images)
  import time
  t0 = time.perf_counter()
  embed(params, images).block_until_ready()
  compile_s = time.perf_counter() - t0
  flops = program_flops(model.embed_images, params, images)
  rate = matmul_rate_gflops()
  shapes_rate = encoder_shapes_rate(cfg)

  jax_times, torch_times = [], []
  official_fn = None
  if not args.skip_official:
    x = torch.from_numpy(images)
    def official_fn():
      with torch.no_grad():
        official.image_encoder(x)
    official_fn()  # warm-up
  for _ in range(args.runs):  # interleave so drift hits both sides alike
    jax_times += time_calls(lambda: embed(params, images).block_until_ready(), 1)
    if official_fn is not None:
      torch_times += time_calls(official_fn, 1)

  tj = median(jax_times)
  say(f"samjax:   {tj:.3f} s/batch  ({args.batch / tj:.3f} images/s)  "
      f"first call incl. compile {compile_s:.1f} s")
  achieved = flops / tj / 1e9
  say(f"samjax:   {flops / 1e12:.3f} TFLOP/batch (matmuls, loop bodies x trip count) -> "
      f"{achieved:.1f} GFLOP/s = {achieved / shapes_rate:.2f} x XLA's fp32 rate on the "
      f"encoder's own matmul shapes ({shapes_rate:.1f} GFLOP/s), "
      f"{achieved / rate:.2f} x its 2048^2 square-product rate ({rate:.1f} GFLOP/s)")
  if torch_times:
    tt = median(torch_times)
    say(f"official: {tt:.3f} s/batch  ({args.batch / tt:.3f} images/s)")
    say(f"ratio (samjax images/s / official images/s): {tt / tj:.2f}x")
    say(f"official: {flops / tt / 1e9:.1f} GFLOP/s = {flops / tt / 1e9 / shapes_rate:.2f} x "
        "XLA's rate on the encoder's shapes; samjax at 100% of that rate would be "
        f"{tt * shapes_rate * 1e9 / flops:.2f}x the official on this host")
  say(f"all runs (s): samjax {[round(t, 3) for t in jax_times]} official "
      f"{[round(t, 3) for t in torch_times]}")
  report.write(args.write, f"bench_encoder_{args.variant}")


if __name__ == "__main__":
  main()

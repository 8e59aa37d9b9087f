"""Train-step speed: seconds per step and achieved FLOP/s (XLA cost analysis) as
a fraction of this machine's measured matmul rate, for the tiny and ViT-B
configs, in one run.

  python experiments/bench_train.py                    # tiny_demo + vit_b (local mode)
  python experiments/bench_train.py --configs tiny     # just the tiny one
  python experiments/bench_train.py --write experiments/results

The ViT-B config is the paper recipe (8 + 2 corrective passes) on a batch of
1 image with --vit-b-masks masks, float32, on all local devices. The recipe's
64 masks fit a 24 GB host only with the decoder run per prompt chunk, each
chunk's gradient taken right after its forward pass (sim.eager_chunk_grads,
nothing recomputed):

  python experiments/bench_train.py --configs vit_b --vit-b-masks 64 --vit-b-prompt-chunk 8

  python experiments/bench_train.py --configs vit_b --profile   # + per-module time
  python experiments/bench_train.py --decoder-form factorized  # the other decoder form

--profile adds, per config, the step's time split by model module and into
forward / backward (XLA's CPU op trace, see xla_op_profile.py).
"""

from __future__ import annotations

import os
import sys
import time

# bench_common beside this file; the repository root for tests.synthetic_data.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xla_op_profile

if "--profile" in sys.argv:
  xla_op_profile.ensure_trace_flag()  # before jax starts

from bench_common import (
  encoder_shapes_rate,
  machine_description,
  make_parser,
  matmul_rate_gflops,
  median,
  program_flops,
  time_calls,
  today,
  write_result,
  xla_flops,
)


def bench_config(name, config, runs, profile_runs: int = 0):
  import jax
  import jax.numpy as jnp

  from samjax.train.interactive import InteractiveConfig
  from samjax.train.loop import build_model
  from samjax.train.optimizer import make_optimizer
  from samjax.train.step import make_train_step
  from tests.synthetic_data import synthetic_batch
  model = build_model(config)
  params = model.init(jax.random.PRNGKey(0))
  tx, _ = make_optimizer(params, model.config, **dict(config.optim))
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "rng": jax.random.PRNGKey(1)}
  b = config.data.batch_size
  batch = synthetic_batch(b, config.data.max_masks, model.config.image_size,
                          model.config.mask_input_size)
  step = jax.jit(make_train_step(model, tx, InteractiveConfig(**dict(config.sim)),
                                 config.prompt_chunk or None,
                                 decoder_form=config.decoder_form))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  temp_gib = getattr(memory, "temp_size_in_bytes", 0) / 2**30 if memory else float("nan")
  flops = program_flops(step, state, batch)
  xla_count = xla_flops(step, state, batch)
  compiled(state, batch)[1]["loss"].block_until_ready()  # warm-up
  times = time_calls(lambda: compiled(state, batch)[1]["loss"].block_until_ready(), runs)
  t = median(times)
  passes = 1 + config.sim.num_point_iters + config.sim.num_mask_only_iters
  modules = (xla_op_profile.profile(compiled, (state, batch), runs=profile_runs, depth=2,
                                    warmup=0) if profile_runs else None)
  return {"name": name, "variant": config.model.variant, "batch": b,
          "masks": config.data.max_masks, "passes": passes, "step_s": t,
          "compile_s": compile_s, "gflop": flops / 1e9, "xla_gflop": xla_count / 1e9,
          "shapes_rate": encoder_shapes_rate(model.config), "gflops": flops / t / 1e9,
          "images_s": b / t, "modules": modules, "temp_gib": temp_gib}


def main(argv=None):
  ap = make_parser(__doc__, runs=3)
  ap.add_argument("--configs", default="tiny,vit_b")
  ap.add_argument("--profile", action="store_true",
                  help="also split one step's time by module and forward/backward")
  ap.add_argument("--vit-b-masks", type=int, default=2,
                  help="masks per image of the ViT-B row (the recipe has 64; at fp32 on a "
                       "CPU, 8 masks ask XLA for 23 GB of buffers and 64 for 144 GB, more "
                       "than a 24 GB host has, unless --vit-b-prompt-chunk)")
  ap.add_argument("--vit-b-prompt-chunk", type=int, default=0,
                  help="decode the ViT-B row's masks in chunks of this many, each "
                       "chunk's gradient taken in its forward pass (sim.eager_chunk_grads); "
                       "0 = all masks in one decoder call, gradients in the backward pass")
  ap.add_argument("--decoder-form", default="reference", choices=("reference", "factorized"),
                  help="the training plan's decoder form (--config.decoder_form) for every "
                       "config")
  args = ap.parse_args(argv)
  from samjax.configs import load_config
  rate = matmul_rate_gflops()
  lines = [f"# bench_train ({today()})", f"machine: {machine_description()}",
           f"XLA fp32 matmul rate (2048^3): {rate:.1f} GFLOP/s",
           "GFLOP/step: matmuls counted through loop bodies x trip count (XLA's cost "
           "analysis, which counts a loop body once, in brackets); fractions: of XLA's "
           "rate on the model's encoder matmul shapes, and of the 2048^3 rate.", "",
           "| config | batch x masks x passes | step | images/s | GFLOP/step (XLA) "
           "| achieved GFLOP/s | fraction: encoder shapes / square | compile |",
           "|---|---|---|---|---|---|---|---|"]
  for line in lines:
    print(line)
  profiles = []
  for name in args.configs.split(","):
    form = [f"--config.decoder_form={args.decoder_form}"]
    if name == "tiny":
      cfg = load_config("tiny_demo", form)
    elif name == "vit_b":
      chunk = args.vit_b_prompt_chunk
      cfg = load_config("sam_vit_b_sa1b:local",
                        ["--config.data.batch_size=1",
                         f"--config.data.max_masks={args.vit_b_masks}",
                         f"--config.prompt_chunk={chunk}",
                         f"--config.sim.eager_chunk_grads={chunk > 0}", *form])
    else:
      raise SystemExit(f"unknown config {name!r}")
    r = bench_config(name, cfg, args.runs, profile_runs=1 if args.profile else 0)
    if cfg.prompt_chunk:
      r["name"] += (f", decoder in chunks of {cfg.prompt_chunk} masks, gradient in the "
                    "forward pass")
    if cfg.decoder_form != "reference":
      r["name"] += f", {cfg.decoder_form} decoder"
    line = (f"| {r['name']} ({r['variant']}) | {r['batch']} x {r['masks']} x {r['passes']} "
            f"| {r['step_s']:.3f} s | {r['images_s']:.2f} | {r['gflop']:.1f} "
            f"({r['xla_gflop']:.1f}) | {r['gflops']:.1f} | {r['gflops'] / r['shapes_rate']:.2f} "
            f"/ {r['gflops'] / rate:.2f} | {r['compile_s']:.0f} s |")
    print(line, flush=True)
    lines.append(line)
    note = f"({r['name']}: XLA's temporary buffers {r['temp_gib']:.1f} GiB)"
    print(note, flush=True)
    lines.append(note)
    profiles.append((name, r["modules"]))
    # Written after every config: a long ViT-B run may be cut short.
    write_result(args.write, "bench_train", lines + _profile_lines(profiles))
  for line in _profile_lines(profiles):
    print(line)


def _profile_lines(profiles) -> list[str]:
  """Markdown tables of the per-module step time (``--profile``)."""
  out = []
  for name, rows in profiles:
    if not rows:
      continue
    total = rows[0][1]
    out += ["", f"### {name}: step time by module (XLA CPU op trace, 1 step)", "",
            "| module | ms | share |", "|---|---:|---:|"]
    out += [f"| {m} | {ms:.0f} | {ms / total:.1%} |" for m, ms, _ in rows[:25]]
  return out


if __name__ == "__main__":
  main()

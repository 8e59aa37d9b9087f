"""Ground truth for `samjax plan --gpu`: run the paper recipes' real train step
on the local GPU(s) and compare the measured step with what `samjax plan`
predicts for the same config on the same devices.

  python experiments/gpu_step_check.py --out results_dir \
      --recipes sam_vit_b_sa1b:8,sam_vit_h_sa1b:8,sam_vit_h_sa1b:8:0 --steps 5

For each ``recipe:batch[:microbatches]`` (batch = images per step on this
host, the recipe's 64 masks x 11 decoder passes each; microbatches sets
``config.microbatches``, 0 = one image per GPU per microbatch): the plan (XLA memory analysis,
scan-aware model FLOPs, the compute floor), then the step itself (state
initialised on the GPU, a synthetic batch, ``--steps`` timed steps after one
warm-up) and the measured MFU = model FLOPs / (step time x peak bf16 FLOP/s).
Each recipe is tried in isolation: an out-of-memory or an error is recorded
and the next one runs. Results go to OUT/gpu_step_check.json and .md as they
come (a killed run keeps what it finished).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _measure(config, steps: int, log) -> dict:
  """Runs the recipe's train step on the local devices; seconds per step."""
  import jax
  import numpy as np

  from samjax.train.setup import BATCH_KEYS, build_program
  from tests.synthetic_data import synthetic_batch

  prog = build_program(config)
  cfg = prog.model.config
  host = synthetic_batch(prog.global_batch_size, int(config.data.max_masks),
                         cfg.image_size, cfg.mask_input_size)
  batch = {k: jax.device_put(np.asarray(host[k]), prog.batch_sharding) for k in BATCH_KEYS}
  with prog.context():
    t = time.perf_counter()
    state = prog.init_state(jax.random.PRNGKey(0))
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = prog.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    log(f"  compiled in {compile_s:.1f}s; temp {mem.temp_size_in_bytes / 2**30:.2f} GiB")
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    float(metrics["loss"])
    first_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      state, metrics = compiled(state, batch)
      loss = float(metrics["loss"])
      times.append(time.perf_counter() - t)
  stats = jax.local_devices()[0].memory_stats() or {}
  return {"init_s": init_s, "compile_s": compile_s, "first_step_s": first_s,
          "step_times_s": times, "step_s": float(np.median(times)), "loss": loss,
          "temp_bytes": int(mem.temp_size_in_bytes),
          "argument_bytes": int(mem.argument_size_in_bytes),
          "peak_bytes_in_use": int(stats.get("peak_bytes_in_use", 0)),
          "bytes_limit": int(stats.get("bytes_limit", 0))}


def _one(name: str, batch: int, steps: int, gpu_kind: str, log,
         microbatches: int | None = None) -> dict:
  import jax

  from samjax.commands.train import load_config
  from samjax.planning import chips, planner

  n = jax.device_count()
  overrides = [f"--config.data.batch_size={batch * n}", "--config.mesh.shape=(1,-1,1)"]
  if microbatches is not None:
    overrides.append(f"--config.microbatches={microbatches}")
  config = load_config(name, overrides)
  row = {"recipe": name, "images_per_gpu": batch, "gpus": n,
         "microbatches": int(config.get("microbatches", 1)),
         "device_kind": jax.devices()[0].device_kind}
  log(f"[{name}] plan for {n} x {gpu_kind}, {batch} images/GPU")
  try:
    # Trace only: the measurement below compiles the same step and reads its
    # memory analysis, so a second compile here would only cost time.
    rep = planner.plan(config, gpu=n, gpu_kind=gpu_kind, config_name=name,
                      compile=False, log=log)
    row["plan"] = rep.to_dict()
    log(rep.table())
  except Exception as e:  # record it and go on to the measurement
    row["plan_error"] = f"{type(e).__name__}: {str(e)[:500]}"
    log(traceback.format_exc())
  log(f"[{name}] measuring {steps} steps")
  try:
    row["measured"] = _measure(config, steps, log)
  except Exception as e:  # an OOM or any failure is a result here
    row["measure_error"] = f"{type(e).__name__}: {str(e)[:800]}"
    log(traceback.format_exc())
    return row
  peak = chips.chip_kind(gpu_kind).peak_bf16_flops
  m, plan = row["measured"], row.get("plan", {})
  if plan.get("model_flops"):
    m["mfu"] = plan["model_flops"] / n / (m["step_s"] * peak)
    m["images_per_s_per_gpu"] = batch / m["step_s"]
  if plan.get("program_flops"):
    m["hfu"] = plan["program_flops"] / n / (m["step_s"] * peak)
  log(f"[{name}] {m['step_s']:.3f} s/step, MFU {m.get('mfu', float('nan')):.3f}, "
      f"HFU {m.get('hfu', float('nan')):.3f}, peak mem "
      f"{m['peak_bytes_in_use'] / 2**30:.1f} GiB")
  return row


def _markdown(rows) -> str:
  lines = ["| recipe | imgs/GPU | microbatches | plan: step floor s | measured s/step "
           "| img/s/GPU | MFU | HFU | XLA temp GiB | GPU peak GiB | compile s |", "|" + "---|" * 11]
  for r in rows:
    p, m = r.get("plan", {}), r.get("measured", {})
    if not m:
      lines.append(f"| {r['recipe']} | {r['images_per_gpu']} | {r.get('microbatches', 1)} | | "
                   f"{r.get('measure_error', '')[:120]} | | | | | | |")
      continue
    lines.append(
        f"| {r['recipe']} | {r['images_per_gpu']} | {r.get('microbatches', 1)} | "
        f"{p.get('step_time_s') or float('nan'):.3f} | {m['step_s']:.3f} | "
        f"{m.get('images_per_s_per_gpu', float('nan')):.2f} | {m.get('mfu', float('nan')):.3f} | "
        f"{m.get('hfu', float('nan')):.3f} | {m['temp_bytes'] / 2**30:.1f} | "
        f"{m['peak_bytes_in_use'] / 2**30:.1f} | "
        f"{m['compile_s']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="folder for gpu_step_check.{json,md}")
  p.add_argument("--recipes", default="sam_vit_b_sa1b:8,sam_vit_h_sa1b:8",
                 help="comma-separated RECIPE:IMAGES_PER_GPU[:MICROBATCHES] "
                      "(default: %(default)s)")
  p.add_argument("--steps", type=int, default=5, help="timed steps (default: %(default)s)")
  p.add_argument("--gpu-kind", default="h100", help="planning.chips kind of the local GPU")
  args = p.parse_args(argv)
  import jax
  os.makedirs(args.out, exist_ok=True)

  def log(msg):
    print(msg, flush=True)

  header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "host": platform.node(), "jax": jax.__version__,
            "devices": [d.device_kind for d in jax.devices()]}
  log(json.dumps(header))
  rows = []
  for spec in args.recipes.split(","):
    name, batch, micro = (spec.split(":") + ["", ""])[:3]
    rows.append(_one(name.strip(), int(batch or 1), args.steps, args.gpu_kind, log,
                     int(micro) if micro else None))
    with open(os.path.join(args.out, "gpu_step_check.json"), "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2, default=str)
    with open(os.path.join(args.out, "gpu_step_check.md"), "w") as f:
      f.write(f"{header}\n\n" + _markdown(rows))
  log(_markdown(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())

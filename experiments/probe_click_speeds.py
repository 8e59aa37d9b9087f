"""Does a click run at one speed, or switch between two on its own?

One process, one predictor, one photo, one click repeated: ``--runs``
blocks of ``--per-block`` back-to-back ``predict`` calls with nothing
changed between blocks (no new buffers, no other work). Per block it prints
the median wall time of a click and, per XLA worker thread, its CPU time
and voluntary context switches per click (from /proc; Linux only), plus a
2-thread fp32 matmul's time as a check on the machine's own speed.

On the 2-core AVX-512 EPYC VMs (2026-11-28) a click takes ~20 ms or
~26.5 ms, switching between the two every few minutes in the same
process, while the matmul's time does not move; in the slow state each
worker thread spends ~5 ms more CPU and ~7 more voluntary switches per
click. See docs/performance_cpu.md.

  python experiments/probe_click_speeds.py [--runs 30] [--per-block 12]   # runs = blocks
  python experiments/probe_click_speeds.py --pin   # workers pinned one per CPU
  python experiments/probe_click_speeds.py --write experiments/results
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (
  SLOW_BLOCK_FACTOR,
  Report,
  host_description,
  make_parser,
  median,
  random_params,
  slow_blocks,
)


def thread_counters() -> dict[str, tuple[str, int, int]]:
  """Thread id -> (name, CPU clock ticks, voluntary context switches)."""
  out = {}
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        stat = f.read()
      with open(f"/proc/self/task/{tid}/status") as f:
        status = f.read()
    except OSError:  # the thread ended meanwhile
      continue
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    switches = next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("voluntary_ctxt_switches"))
    out[tid] = (name, ticks, switches)
  return out


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=30, runs_help="blocks")
  ap.add_argument("--per-block", type=int, default=12, help="timed clicks per block")
  ap.add_argument("--pin", action="store_true",
                  help="pin each XLA worker thread to its own CPU (os.sched_setaffinity) "
                       "after the first click, to test whether thread placement is the cause")
  args = ap.parse_args(argv)
  if not os.path.isdir("/proc/self/task"):
    raise SystemExit("needs Linux /proc for per-thread counters")

  import jax
  import jax.numpy as jnp

  from samjax import build
  from samjax.inference.predictor import SamPredictor
  from samjax.loading import LoadedSam

  model = build(args.variant)
  predictor = SamPredictor(LoadedSam(model, random_params(model)), compile_cache=False)
  image = (np.random.default_rng(0).random((400, 600, 3)) * 255).astype(np.uint8)
  predictor.set_image(image)
  point, label = np.array([[300, 200]]), np.array([1])
  matmul = jax.jit(lambda a: a @ a)
  square = jnp.ones((1024, 1024), jnp.float32)
  tick_ms = 1e3 / os.sysconf("SC_CLK_TCK")
  predictor.predict(point_coords=point, point_labels=label)  # compiles; starts the workers
  if args.pin:
    cpus = sorted(os.sched_getaffinity(0))
    workers = sorted(t for t, (name, *_) in thread_counters().items()
                     if name.startswith("tf_XLAEigen"))
    for i, tid in enumerate(workers):
      os.sched_setaffinity(int(tid), {cpus[i % len(cpus)]})

  report = Report(f"probe_click_speeds {args.variant}: {args.runs} blocks x "
                  f"{args.per_block} clicks, nothing changed between blocks"
                  + (", XLA workers pinned one per CPU" if args.pin else ""),
                  f"host: {host_description()}")
  say = report.say
  say("| block | click ms | XLA workers: CPU ms / voluntary switches per click | "
      "1024^2 matmul ms |")
  say("|---|---|---|---|")
  clicks = []
  for block in range(args.runs):
    predictor.predict(point_coords=point, point_labels=label)  # untimed
    before = thread_counters()
    times = []
    for _ in range(args.per_block):
      t0 = time.perf_counter()
      predictor.predict(point_coords=point, point_labels=label)
      times.append(time.perf_counter() - t0)
    after = thread_counters()
    worker_rows = []
    for tid, (name, ticks, switches) in after.items():
      if tid in before and name.startswith("tf_XLAEigen"):
        n = args.per_block
        worker_rows.append(f"{(ticks - before[tid][1]) * tick_ms / n:.1f} / "
                       f"{(switches - before[tid][2]) / n:.0f}")
    matmul(square).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(10):
      matmul(square).block_until_ready()
    mm = (time.perf_counter() - t0) / 10
    clicks.append(median(times))
    say(f"| {block} | {clicks[-1] * 1e3:.1f} | {', '.join(worker_rows)} | {mm * 1e3:.2f} |")
  slow = slow_blocks(clicks)
  say("")
  say(f"fastest block {min(clicks) * 1e3:.1f} ms; {len(slow)} of {len(clicks)} blocks more than "
      f"{SLOW_BLOCK_FACTOR - 1:.0%} slower"
      + (f" (their median {median(slow) * 1e3:.1f} ms)" if slow else "") + ".")
  report.write(args.write, f"probe_click_speeds_{args.variant}")


if __name__ == "__main__":
  main()

"""`samjax plan` for the paper recipes, one compile at a time, as a Markdown table.

  python experiments/plan_paper_recipes.py --out experiments/results/plan_$(date +%F)_cpu-host.md
  python experiments/plan_paper_recipes.py --runs vit_h:v5p-128 vit_h:v5p-512 \\
      --override --config.model.scan_layers=false

Each run is a subprocess (`samjax plan ... --json`), so a compile that hangs
can be cut off (--timeout, default 20 min) without losing the others. On a
2-core CPU a ViT-H step for 64 chips takes minutes to compile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CONFIGS = {v: f"experiments/configs/sam_{v}_sa1b.py" for v in ("vit_b", "vit_l", "vit_h")}
# The paper: 256 A100s for 68 h = 90k steps of 256 images (ViT-H).
PAPER_A100_S_PER_IMAGE = 256 * 68 * 3600 / (90_000 * 256)


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else platform.processor()
  except OSError:
    return platform.processor() or "unknown"


def plan_one(variant: str, topology: str, overrides, timeout: float) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "plan.json")
    cmd = [sys.executable, "-m", "samjax.cli", "plan", "--config", CONFIGS[variant],
           "--topology", topology, "--json", out, *overrides]
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    try:
      proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
      return {"variant": variant, "topology": topology,
              "error": f"compile exceeded {timeout / 60:.0f} min; killed"}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("[plan]", "  "))]
    print("\n".join(lines), flush=True)
    if proc.returncode != 0 or not os.path.exists(out):
      err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
      return {"variant": variant, "topology": topology, "error": err}
    with open(out) as f:
      rep = json.load(f)
  rep.update(variant=variant, topology=topology, wall_s=wall)
  return rep


def _gib(b):
  return "-" if b is None else f"{b / 2 ** 30:.1f}"


def table(reports) -> str:
  head = ("| recipe | target | mesh | scan / remat / microbatches | params+opt / chip GiB | "
          "peak / chip GiB | fits | model TFLOP / step | step s | img/s/chip | "
          "chip-s / image | MFU | trace / lower / compile s |")
  rows = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
  for r in reports:
    if "error" in r:
      rows.append(f"| {r['variant']} | {r['topology']} | | | | | error: {r['error']} "
                  "| | | | | | |")
      continue
    fits = "-" if r["fits"] is None else ("yes" if r["fits"] else
                                          f"NO (+{-r['headroom_bytes'] / 2 ** 30:.0f} GiB)")
    step = "-" if r["step_time_s"] is None else f"{r['step_time_s']:.2f}"
    ips = "-" if r["images_per_s_per_chip"] is None else f"{r['images_per_s_per_chip']:.2f}"
    cspi = "-" if r["chip_seconds_per_image"] is None else f"{r['chip_seconds_per_image']:.3f}"
    mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.0f}%"
    times = " / ".join("-" if r.get(k) is None else f"{r[k]:.0f}"
                       for k in ("trace_s", "lower_s", "compile_s"))
    rows.append(
        f"| {r['variant']} (batch {r['global_batch']}, {r['max_masks']} masks, "
        f"{r['decoder_passes']} passes) | {r['target']} | {tuple(r['mesh_shape'])} | "
        f"{r['model']['scan_layers']} / {r['model']['remat_policy']} / "
        f"{r['model'].get('microbatches', 1)} | "
        f"{_gib(r['param_bytes'] + r['opt_state_bytes'])} | {_gib(r['peak_bytes'])} | "
        f"{fits} | {r['model_flops'] / 1e12:.0f} | {step} | {ips} | {cspi} | {mfu} | "
        f"{times} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", nargs="+", default=["vit_h:v5p-128", "vit_l:v5p-128",
                                               "vit_b:v5p-128"],
                 help="VARIANT:TOPOLOGY pairs (default: the three recipes on v5p-128)")
  p.add_argument("--override", action="append", default=[],
                 help="a --config.a.b=v override for every run (repeatable)")
  p.add_argument("--timeout", type=float, default=1200, help="seconds per compile")
  p.add_argument("--out", help="write the Markdown table here")
  args = p.parse_args(argv)
  reports = []
  for run in args.runs:
    variant, _, topology = run.partition(":")
    reports.append(plan_one(variant, topology, args.override, args.timeout))
  text = (f"Host: {cpu_name()}; {datetime.date.today()}; overrides: "
          f"{' '.join(args.override) or 'none'}\n\n{table(reports)}\n\n"
          f"Paper (ViT-H): {PAPER_A100_S_PER_IMAGE:.2f} A100-seconds per image.\n")
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Shared benchmark helpers: command line, report, timing, machine description,
matmul-rate baseline, official-vs-samjax models.

jax is imported inside the helpers that use it, so a benchmark of the
host-side data pipeline (``bench_data.py``) does not load it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

from samjax.hardware import quiet_libtpu_without_tpu

# Before jax starts (the benchmarks import it after this module): an installed
# libtpu stays quiet on a host without a TPU. `import samjax` sets nothing.
quiet_libtpu_without_tpu()


def make_parser(doc: str, *, variant: str | None = None, runs: int | None = None,
                runs_help: str | None = None, write: bool = True) -> argparse.ArgumentParser:
  """The benchmarks' common command line: ``doc`` (the script's docstring) as
  help, and the flags most of them take.

  Args:
    variant: default of ``--variant`` (model size); None: no such flag.
    runs: default of ``--runs`` (timed repetitions); None: no such flag.
    write: add ``--write DIR`` (markdown result file, see ``write_result``).
  """
  ap = argparse.ArgumentParser(description=doc,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  if variant is not None:
    ap.add_argument("--variant", default=variant)
  if runs is not None:
    ap.add_argument("--runs", type=int, default=runs, help=runs_help)
  if write:
    ap.add_argument("--write", metavar="DIR", help="also write a markdown result file here")
  return ap


class Report:
  """A result's lines: a header (title, date, machine, ``details``), then each
  ``say`` line, all printed as they come and written by ``write``."""

  def __init__(self, title: str, *details: str):
    self.lines = [f"# {title}", f"date: {today()}", f"machine: {machine_description()}",
                  *details, ""]
    for line in self.lines:
      print(line, flush=True)

  def say(self, line: str) -> None:
    print(line, flush=True)
    self.lines.append(line)

  def write(self, directory: str | None, name: str) -> None:
    write_result(directory, name, self.lines)


def time_calls(fn: Callable[[], object], runs: int) -> list[float]:
  """Wall seconds of ``runs`` calls of ``fn`` (which must block until done)."""
  out = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def time_alternating_blocks(fn_a: Callable[[], object], fn_b: Callable[[], object],
                            blocks: int, per_block: int) -> tuple[list[float], list[float]]:
  """Wall seconds of ``fn_a`` and ``fn_b`` timed in alternating blocks.

  Each block runs one untimed call, then ``per_block`` timed ones, of one
  side, then the same for the other; ``blocks`` rounds. Alternating blocks
  cancels slow drift of the host like single-call interleaving does, but
  measures each side in its steady state: a samjax click right after a
  torch call runs on cold caches, 31.1 ms instead of 22.7 ms (+37 %), the
  official click 60.4 ms instead of 58.0 (+4 %) (2-core EPYC, 2026-11-28),
  a cost that a caller running only one of the libraries does not pay.
  """
  a, b = [], []
  for _ in range(blocks):
    for fn, out in ((fn_a, a), (fn_b, b)):
      fn()
      out += time_calls(fn, per_block)
  return a, b


def median(xs) -> float:
  return float(statistics.median(xs))


# A timing block this much slower than a run's fastest one ran in the host's
# slow state (docs/performance_cpu.md: XLA's click runs at one of two speeds,
# ~20 or ~26.5 ms on the AVX-512 EPYC, and switches on its own).
SLOW_BLOCK_FACTOR = 1.15


def slow_blocks(block_times: list[float]) -> list[float]:
  """The blocks more than ``SLOW_BLOCK_FACTOR`` above the fastest one."""
  fastest = min(block_times)
  return [t for t in block_times if t > SLOW_BLOCK_FACTOR * fastest]


def cpu_name() -> str:
  """The CPU's model name (from /proc/cpuinfo where there is one)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


# CPU features that decide XLA's and torch's matmul kernels on x86.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "amx_fp16")


def cpu_flags() -> list[str]:
  """The ``ISA_FLAGS`` this CPU reports (from /proc/cpuinfo; [] where unreadable)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          have = set(line.split(":", 1)[1].split())
          return [flag for flag in ISA_FLAGS if flag in have]
  except OSError:
    pass
  return []


def host_description() -> str:
  """CPU model, core count and the matmul-relevant ISA flags, in one line."""
  flags = cpu_flags()
  return (f"{cpu_name()}, {os.cpu_count()} cores, ISA: "
          f"{' '.join(flags) if flags else 'unknown'}")


def host_tag() -> str:
  """Short host name for result file names: ``amd-epyc``, ``intel-xeon-avx512-amx``..."""
  name = cpu_name().lower()
  vendor = ("amd" if "amd" in name else "intel" if "intel" in name
            else re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:24] or "cpu")
  family = ("epyc" if "epyc" in name else "xeon" if "xeon" in name else "")
  flags = cpu_flags()
  extras = [tag for tag, flag in (("avx512", "avx512f"), ("amx", "amx_tile")) if flag in flags]
  return "-".join(part for part in (vendor, family, *extras) if part)


def machine_description() -> str:
  import jax
  dev = jax.devices()[0]
  return (f"{os.cpu_count()} CPU cores ({cpu_name()}); jax {jax.__version__} on "
          f"{dev.platform} ({dev.device_kind}); host: {host_description()}")


def matmul_rate_gflops(n: int = 2048, runs: int = 5, dtype="float32") -> float:
  """The machine's float32 matmul rate through XLA on a square n^3 product."""
  return matmul_rates({"square": (n, n, n)}, runs, dtype)["square"]


def random_params(model, seed: int = 0, scale: float = 0.02):
  """Random float32 params of ``model``'s shapes from numpy (no init program to
  compile): for timing, where the values do not matter."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape).astype(np.float32) * scale),
                      model.param_shapes())


def matmul_rates(shapes: dict[str, tuple[int, int, int]], runs: int = 5,
                 dtype="float32") -> dict[str, float]:
  """XLA's GFLOP/s for each named ``(m, k, n)`` product ``[m, k] @ [k, n]``.

  The model's own shapes (e.g. ViT-B's qkv: 4096 x 768 x 2304) run at a
  different rate than a square product; a part of the model is judged
  against the rate of its own shapes.
  """
  import jax
  import jax.numpy as jnp
  out = {}
  for name, (m, k, n) in shapes.items():
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    t = median(time_calls(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), runs))
    out[name] = 2 * m * k * n / t / 1e9
  return out


def encoder_shapes_rate(config, runs: int = 5) -> float:
  """XLA's GFLOP/s on the image encoder's own weight matmuls (one block's qkv,
  proj, lin1, lin2 at the full token grid: total FLOPs / total time): the
  ceiling the encoder is judged against, next to the square-product rate."""
  t = config.embedding_size ** 2
  c = config.encoder_embed_dim
  mlp = int(c * config.mlp_ratio)
  shapes = {"qkv": (t, c, 3 * c), "proj": (t, c, c), "lin1": (t, c, mlp), "lin2": (t, mlp, c)}
  rates = matmul_rates(shapes, runs)
  flops = {name: 2 * m * k * n for name, (m, k, n) in shapes.items()}
  return sum(flops.values()) / sum(flops[name] / rates[name] for name in shapes)


def program_flops(fn, *args) -> float:
  """Matmul + conv FLOPs of one call of ``fn``, loop bodies (``lax.scan`` /
  ``lax.map``: the scanned encoder, the CPU attention kernels, the decoder
  passes) multiplied by their trip counts. XLA's cost analysis counts a loop
  body once (``xla_flops``), which undercounts these programs."""
  from samjax.planning.flops import count_flops
  return float(count_flops(fn, *args).total)


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call according to XLA's cost analysis (loop bodies counted once)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  return float(cost.get("flops", 0.0))


def today() -> str:
  return datetime.date.today().isoformat()


def official_and_samjax(model_config, seed: int = 0):
  """An official ``Sam`` with seeded random weights and the same weights as samjax params.

  Returns (official torch module, samjax params pytree). Both sides of a
  benchmark then compute the same function.
  """
  import torch

  from samjax.interop import build_official_sam, params_from_state_dict
  torch.manual_seed(seed)
  official = build_official_sam(model_config)
  params = params_from_state_dict(
      {k: v.numpy() for k, v in official.state_dict().items()}, model_config)
  return official, params


def loaded_and_official(variant: str, seed: int = 0):
  """(samjax ``LoadedSam``, official ``Sam``) of ``variant``, same seeded weights:
  what the predictor and generator benchmarks compare."""
  from samjax import build
  from samjax.loading import LoadedSam
  model = build(variant)
  official, params = official_and_samjax(model.config, seed)
  return LoadedSam(model, params), official


def write_result(directory: str | None, name: str, lines: list[str]) -> None:
  """Writes ``lines`` to ``directory/<name>_<date>_<host>.md`` (no-op without a directory).

  ``<host>`` is ``host_tag()`` on a CPU (``amd-epyc``, ``intel-xeon-avx512-amx``),
  else the accelerator platform, so results of different hosts sit side by side.
  """
  if not directory:
    return
  import jax
  os.makedirs(directory, exist_ok=True)
  platform_name = jax.devices()[0].platform
  host = host_tag() if platform_name == "cpu" else platform_name
  path = os.path.join(directory, f"{name}_{today()}_{host}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"wrote {path}")

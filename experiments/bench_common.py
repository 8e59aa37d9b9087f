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
import statistics
import time
from collections.abc import Callable


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


def median(xs) -> float:
  return float(statistics.median(xs))


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


def machine_description() -> str:
  import jax
  dev = jax.devices()[0]
  return (f"{os.cpu_count()} CPU cores ({cpu_name()}); jax {jax.__version__} on "
          f"{dev.platform} ({dev.device_kind})")


def matmul_rate_gflops(n: int = 2048, runs: int = 5, dtype="float32") -> float:
  """The machine's float32 matmul rate through XLA: the practical ceiling."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = median(time_calls(lambda: f(a).block_until_ready(), runs))
  return 2 * n ** 3 / t / 1e9


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call according to XLA's cost analysis."""
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
  """Writes ``lines`` to ``directory/<name>_<date>_<platform>.md`` (no-op without a directory)."""
  if not directory:
    return
  import jax
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}_{today()}_{jax.devices()[0].platform}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"wrote {path}")

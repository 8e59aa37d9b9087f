"""Shared benchmark helpers: timing, machine description, matmul-rate baseline."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


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


def machine_description() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  dev = jax.devices()[0]
  return (f"{os.cpu_count()} CPU cores ({cpu}); jax {jax.__version__} on "
          f"{dev.platform} ({dev.device_kind})")


def matmul_rate_gflops(n: int = 2048, runs: int = 5, dtype=jnp.float32) -> float:
  """The machine's float32 matmul rate through XLA: the practical ceiling."""
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


def write_result(directory: str | None, name: str, lines: list[str]) -> None:
  """Writes ``lines`` to ``directory/<name>_<date>_<platform>.md`` (no-op without a directory)."""
  if not directory:
    return
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}_{today()}_{jax.devices()[0].platform}.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"wrote {path}")

"""Per-module time of a jitted program on the CPU, from XLA's own op trace.

XLA's CPU runtime records one trace event per executed op (fusion, dot,
copy) when ``--xla_cpu_enable_xprof_traceme=true`` is in ``XLA_FLAGS``
before jax starts; the compiled HLO names, for every op, the jax source op
it came from (``op_name`` metadata, e.g. ``jit(f)/FactorizedMaskDecoder/
transformer/layers_0/cross_attn_token_to_image/dot_general``). Joining the
two gives the time of each model module, in the program as it really runs
(after fusion), which timing modules one by one cannot.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile

FLAG = "--xla_cpu_enable_xprof_traceme=true"


def ensure_trace_flag() -> None:
  """Adds ``FLAG`` to XLA_FLAGS; must run before jax initialises its backend."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + FLAG).strip()


def op_sources(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> its jax op_name (the top-level ops of the entry
  computation and every fused computation's root carry one)."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo_text,
                       re.MULTILINE):
    out.setdefault(m.group(1), m.group(2))
  return out


# Path components that are jax transformations or loop plumbing, not modules.
_PLUMBING = ("while", "body", "cond", "closed_call", "remat", "checkpoint", "rematted_computation")


def module_of(op_name: str, depth: int, strip: str = "") -> str:
  """'jit(f)/FactorizedMaskDecoder/transformer/layers_0/x/dot' -> the first
  ``depth`` module components after ``strip`` (e.g. 'transformer/layers_0').

  Transformation wrappers (``jit(..)``, ``jvp(..)``, ``vmap(..)``) and loop
  plumbing are skipped; ops of a backward pass (their op_name holds
  ``transpose(``) are prefixed 'bwd '.
  """
  path = op_name.split(strip, 1)[1] if strip and strip in op_name else op_name
  # Also skipped: scopes of private methods ("image_encoder._unrolled_blocks").
  parts = [p for p in path.split("/")
           if p and "(" not in p and ")" not in p and p not in _PLUMBING and "._" not in p]
  # The last component is the primitive (dot_general, add, ...): not a module.
  name = "/".join(parts[:-1][:depth]) or "(top level)"
  return ("bwd " if "transpose(" in op_name else "") + name


def profile(fn, args, *, runs: int = 10, depth: int = 3, strip: str = "",
            warmup: int = 3) -> list:
  """Runs ``fn(*args)`` ``runs`` times under the profiler.

  ``fn`` is a jitted function or an already compiled one (``.lower().compile()``,
  which saves compiling a large step twice).
  Returns [(module, ms per call, op count)] sorted by time, plus a
  ('(total of traced ops)', ...) row first. Needs ``ensure_trace_flag()``
  before jax started; without it the trace holds no per-op events.
  """
  import jax
  compiled = fn if hasattr(fn, "as_text") else fn.lower(*args).compile()
  hlo = compiled.as_text()
  fn = compiled
  sources = op_sources(hlo)
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    for _ in range(runs):
      jax.block_until_ready(fn(*args))
    jax.profiler.stop_trace()
    files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      raise RuntimeError("the profiler wrote no trace")
    with gzip.open(files[0]) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_module = collections.defaultdict(float)
  count = collections.Counter()
  total = 0.0
  for e in events:
    if e.get("ph") != "X" or e.get("name") not in sources:
      continue
    ms = e.get("dur", 0) / 1000.0 / runs
    mod = module_of(sources[e["name"]], depth, strip)
    per_module[mod] += ms
    count[mod] += 1
    total += ms
  rows = sorted(((m, t, count[m] // runs) for m, t in per_module.items()),
                key=lambda r: -r[1])
  return [("(total of traced ops)", total, sum(c for *_, c in rows))] + rows

"""``PlanReport``: what ``samjax plan`` found for one config on one target,
and how it prints; plus the config helpers the planner and ``--sweep`` share
(mesh shapes, state bytes per chip).

The planning itself is ``samjax.planning.planner.plan``.
"""

from __future__ import annotations

import copy
import dataclasses
import math


@dataclasses.dataclass
class PlanReport:
  """One planned (config, devices, mesh). Bytes are per chip unless named
  ``_total``; FLOPs per step are global (all chips) unless ``_per_chip``;
  seconds are wall-clock.
  """
  config: str
  target: str                      # "v5p:4x4x4 (v5p-128, 64 chips)" / "8 x h100"
  chip: str
  platform: str                    # tpu | gpu
  num_chips: int
  num_devices: int
  mesh_shape: tuple                # (data, fsdp, model)
  model: dict                      # variant and the compute settings compiled
  global_batch: int
  max_masks: int
  decoder_passes: int
  hbm_bytes: int
  peak_flops_per_chip: float
  # Static state, from the shardings (per chip).
  num_params: int = 0
  param_bytes_total: int = 0
  param_bytes: int = 0
  opt_state_bytes: int = 0
  batch_bytes: int = 0
  other_state_bytes: int = 0
  # XLA memory_analysis of the per-device program (per chip).
  compiled: bool = False
  xla_argument_bytes: int | None = None
  xla_output_bytes: int | None = None
  xla_alias_bytes: int | None = None
  xla_temp_bytes: int | None = None
  xla_generated_code_bytes: int | None = None
  peak_bytes: int | None = None    # argument + output - alias + temp + code
  fits: bool | None = None
  headroom_bytes: int | None = None  # HBM - peak (negative: over by that much)
  # FLOPs.
  model_flops: float | None = None      # per step, remat off (MFU numerator)
  program_flops: float | None = None    # per step, as compiled (remat recompute in)
  program_flops_scan_once: float | None = None  # loops counted once (as XLA does)
  flops_exact: bool = True
  xla_flops_per_chip: float | None = None
  xla_bytes_accessed_per_chip: float | None = None
  # Time.
  xla_optimal_seconds: float | None = None  # TPU cost model, loop bodies once
  step_time_s: float | None = None          # loop-corrected estimate
  step_time_source: str = ""
  images_per_s_per_chip: float | None = None
  chip_seconds_per_image: float | None = None
  mfu: float | None = None
  hfu: float | None = None                  # program (remat-inclusive) FLOPs
  lower_s: float | None = None
  compile_s: float | None = None
  trace_s: float | None = None
  # Multi-slice: slices per mesh axis and, per megascale transfer kind, what a
  # device sends over the data-center network per step
  # (samjax.planning.dcn.DcnTransfer as dicts).
  num_slices: int = 1
  dcn_shape: tuple = (1, 1, 1)
  dcn_transfers: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)
  limitations: list = dataclasses.field(default_factory=list)

  @property
  def model_flops_per_chip(self) -> float | None:
    return None if self.model_flops is None else self.model_flops / self.num_chips

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["mesh_shape"] = list(self.mesh_shape)
    d["dcn_shape"] = list(self.dcn_shape)
    d["model_flops_per_chip"] = self.model_flops_per_chip
    return d

  def table(self) -> str:
    """Human-readable summary (what ``samjax plan`` prints)."""
    return format_report(self)


# --------------------------------------------------------------------------
# Config helpers


def with_mesh_shape(config, mesh_shape):
  """A copy of ``config`` with ``mesh.shape`` replaced."""
  config = copy.deepcopy(config)
  config.mesh.shape = tuple(int(s) for s in mesh_shape)
  return config


def parse_mesh(text: str, flag: str = "--mesh") -> tuple:
  """"1,-1,1" -> (1, -1, 1): (data, fsdp, model) sizes, at most one -1."""
  try:
    shape = tuple(int(s) for s in text.replace("x", ",").split(","))
  except ValueError:
    raise ValueError(f"{flag} {text!r}: expected 3 integers data,fsdp,model "
                     "(one may be -1)") from None
  if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"{flag} {text!r}: expected 3 integers data,fsdp,model "
                     "(positive, one may be -1)")
  return shape


# --------------------------------------------------------------------------
# Shardings


def shard_bytes(leaf) -> int:
  shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
  return math.prod(shape) * leaf.dtype.itemsize


def state_bytes(abstract_state) -> dict:
  """Per-device bytes of each part of the train state (shard of each leaf)."""
  import jax
  out = {"params": 0, "opt_state": 0, "other": 0, "params_total": 0, "num_params": 0}
  for key, sub in abstract_state.items():
    for leaf in jax.tree_util.tree_leaves(sub):
      part = key if key in ("params", "opt_state") else "other"
      out[part] += shard_bytes(leaf)
      if key == "params":
        out["params_total"] += math.prod(leaf.shape) * leaf.dtype.itemsize
        out["num_params"] += math.prod(leaf.shape)
  return out


# --------------------------------------------------------------------------
# Printing


def _b(n) -> str:
  if n is None:
    return "-"
  sign = "-" if n < 0 else ""
  n = abs(n)
  for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
    if n >= size:
      return f"{sign}{n / size:.2f} {unit}"
  return f"{sign}{n} B"


def _f(x, unit="", scale=1.0, fmt=".2f") -> str:
  return "-" if x is None else f"{x / scale:{fmt}}{unit}"


def _sec(x) -> str:
  if x is None:
    return "-"
  return f"{x:.3f} s" if x >= 1 else f"{x * 1e3:.3g} ms"


def format_flops(x) -> str:
  """FLOPs with a unit that keeps 3 significant digits."""
  if x is None:
    return "-"
  for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if abs(x) >= size:
      return f"{x / size:.3g} {unit}"
  return f"{x:.3g} FLOP"


def _microbatch_note(global_batch: int, microbatches: int) -> str:
  if microbatches <= 1:
    return ""
  return (f"; {microbatches} sequential microbatches of {global_batch // microbatches} "
          "images (gradient accumulation)")


def _chunks(model: dict) -> str:
  """How the decoder's masks are split into prompt chunks, in words."""
  n = model["prompt_chunk"]
  return f"per chunk of {n} masks" if n else "all masks as one chunk"


def format_report(r: PlanReport) -> str:
  m = r.model
  rows = [
      ("config", r.config or "-"),
      ("target", f"{r.target}; {r.num_devices} devices, mesh (data, fsdp, model) = "
                 f"{tuple(r.mesh_shape)}"),
      ("model", f"{m['variant']} {m['image_size']}px, {m['dtype']}, remat "
                f"{m['remat_policy']}, scan_layers {m['scan_layers']}, attention "
                f"{m['attention_impl']}, {m['decoder_form']} decoder"),
      ("batch", f"{r.global_batch} images x {r.max_masks} masks, {r.decoder_passes} "
                "decoder passes"
                + (f" (decoder gradients taken in the forward pass, {_chunks(m)})"
                   if m["eager_chunk_grads"] else "")
                + _microbatch_note(r.global_batch, m["microbatches"])),
      ("parameters", f"{r.num_params / 1e6:.1f}M, {_b(r.param_bytes_total)} total; "
                     f"{_b(r.param_bytes)} per chip"),
      ("optimizer state / chip", _b(r.opt_state_bytes)),
      ("batch / chip", _b(r.batch_bytes)),
      ("XLA argument / output / alias", f"{_b(r.xla_argument_bytes)} / "
       f"{_b(r.xla_output_bytes)} / {_b(r.xla_alias_bytes)}"),
      ("XLA temp (activations...)", _b(r.xla_temp_bytes)),
      ("peak HBM / chip", f"{_b(r.peak_bytes)} of {_b(r.hbm_bytes)}"),
      ("fits", "unknown" if r.fits is None else
       (f"yes, {_b(r.headroom_bytes)} free" if r.fits else
        f"NO, over by {_b(-r.headroom_bytes)}")),
      ("model FLOPs / step", format_flops(r.model_flops) + (
          "" if r.model_flops is None else
          f" ({format_flops(r.model_flops_per_chip)} per chip)")),
      ("program FLOPs / step", f"{format_flops(r.program_flops)} (remat recompute in; loop "
                               f"bodies once: {format_flops(r.program_flops_scan_once)})"),
      ("XLA FLOPs / chip", format_flops(r.xla_flops_per_chip) + " (loop bodies once, all ops)"),
      ("step time", _sec(r.step_time_s) +
       (f"  [{r.step_time_source}]" if r.step_time_source else "")),
      ("images / s / chip", _f(r.images_per_s_per_chip, "", 1, ".2f")),
      ("chip-seconds / image", _f(r.chip_seconds_per_image, "", 1, ".3g")),
      ("MFU (model) / HFU", f"{_f(r.mfu, '', 0.01, '.1f')}% / {_f(r.hfu, '', 0.01, '.1f')}%"
       if r.mfu is not None else "-"),
      ("trace / lower / compile", f"{_f(r.trace_s, ' s', 1, '.0f')} / "
       f"{_f(r.lower_s, ' s', 1, '.0f')} / {_f(r.compile_s, ' s', 1, '.0f')}"),
  ]
  if r.num_slices > 1:
    rows.insert(2, ("slices (DCN)", f"{r.num_slices}, per mesh axis {tuple(r.dcn_shape)}"))
    rows.insert(-1, ("DCN traffic / chip / step", _dcn_summary(r)))
  width = max(len(k) for k, _ in rows)
  lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
  for n in r.notes:
    lines.append(f"  note: {n}")
  for n in r.limitations:
    lines.append(f"  not reported: {n}")
  return "\n".join(lines)


def _dcn_summary(r: PlanReport) -> str:
  """What crosses slices, per device per step: "ALL_REDUCE 12 x, 1.2 GiB; ..."."""
  if not r.compiled:
    return "- (not compiled)"
  if not r.dcn_transfers:
    return "nothing crosses slices"
  return "; ".join(f"{t['kind']} {t['count']} x, {_b(t['bytes'])} (largest {t['largest']})"
                   for t in r.dcn_transfers)


def format_sweep(reports) -> str:
  """One line per planned variant, best fitting (fastest) marked."""
  best = best_report(reports)
  head = (f"  {'mesh':<14}{'remat':<15}{'micro':>6}{'peak/chip':>12}{'fits':>6}{'step s':>9}"
          f"{'img/s/chip':>12}{'MFU':>7}{'compile s':>11}")
  lines = [head]
  for r in reports:
    if isinstance(r, tuple):  # (label, error)
      lines.append(f"  {r[0]:<35}failed: {r[1]}")  # under peak/chip: mesh+remat+micro
      continue
    mark = "  <- best" if r is best else ""
    lines.append(
        f"  {tuple(r.mesh_shape)!s:<14}{r.model['remat_policy']:<15}"
        f"{r.model['microbatches']:>6}"
        f"{_b(r.peak_bytes):>12}{'-' if r.fits is None else ('yes' if r.fits else 'NO'):>6}"
        f"{_f(r.step_time_s, '', 1, '.3f'):>9}{_f(r.images_per_s_per_chip, '', 1, '.2f'):>12}"
        f"{_f(r.mfu, '%', 0.01, '.1f'):>7}{_f(r.compile_s, '', 1, '.0f'):>11}{mark}")
  return "\n".join(lines)


def best_report(reports):
  ok = [r for r in reports if isinstance(r, PlanReport) and r.fits and r.step_time_s]
  return min(ok, key=lambda r: r.step_time_s) if ok else None

"""``plan(config, topology=...)``: compile the real train step for chips that
are not here and report memory, FLOPs, step time and MFU per chip.

The program is ``samjax.train.setup.build_program(config, devices)``, the
same jitted, donated step ``samjax train`` runs, lowered onto compile-only
TPU devices from libtpu (``jax.experimental.topologies``) and compiled by the
TPU compiler on this host's CPU. What comes back:

* per-chip bytes of parameters / optimizer state / batch, from the shardings
  of the abstract state (a leaf's shard on one device);
* XLA's ``memory_analysis()`` of the compiled per-device program (argument,
  output, temp bytes) against the chip's HBM;
* FLOPs: ``samjax.planning.flops`` counts the program's matmuls through
  scans (``program_flops``, remat recomputation included) and the model's
  (``model_flops``: the same step traced with remat off, the MFU
  convention); XLA's own count sits beside them;
* step time from the TPU cost model (``cost_analysis()["optimal_seconds"]``)
  and the MFU it implies.

The TPU compiler refuses a program that does not fit in HBM; that
"RESOURCE_EXHAUSTED ... Exceeded hbm capacity by N" is turned into a report
with ``fits=False`` and the compiler's numbers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import re
import time
from collections.abc import Callable

from samjax.planning import chips as chips_lib
from samjax.planning import flops as flops_lib

# libtpu looks these up when it loads and, on a host that is not a TPU VM,
# prints a wall of warnings without them. Any valid values silence it; they
# do not change the topology asked of get_topology_desc. libtpu also takes a
# lock file (/tmp/libtpu_lockfile) so that one process owns the TPU; with
# compile-only devices there is nothing to own, and without
# ALLOW_MULTIPLE_LIBTPU_LOAD a second plan (or test) fails while one runs.
LIBTPU_QUIET_ENV = {"TPU_ACCELERATOR_TYPE": "v5p-8", "TPU_WORKER_HOSTNAMES": "localhost",
                    "TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}

INSTALL_HINT = 'pip install "libtpu==0.0.42.*"  (or: pip install -e ".[tpu-plan]")'


def quiet_libtpu_env() -> None:
  """Sets ``LIBTPU_QUIET_ENV`` (unless already set); call before libtpu loads."""
  for k, v in LIBTPU_QUIET_ENV.items():
    os.environ.setdefault(k, v)


def libtpu_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("libtpu") is not None


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
  notes: list = dataclasses.field(default_factory=list)
  limitations: list = dataclasses.field(default_factory=list)

  @property
  def model_flops_per_chip(self) -> float | None:
    return None if self.model_flops is None else self.model_flops / self.num_chips

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["mesh_shape"] = list(self.mesh_shape)
    d["model_flops_per_chip"] = self.model_flops_per_chip
    return d

  def table(self) -> str:
    """Human-readable summary (what ``samjax plan`` prints)."""
    return format_report(self)


# --------------------------------------------------------------------------
# Config helpers


def _sam_fields() -> set:
  from samjax.model.configs import SamConfig
  return {f.name for f in dataclasses.fields(SamConfig)}


def set_model_option(config, name: str, value) -> bool:
  """Sets a SamConfig compute field on an experiment config, wherever this
  config layout keeps it (``config.model.NAME`` or ``model.overrides``).
  Returns False (and changes nothing) when SamConfig has no such field."""
  if name not in _sam_fields():
    return False
  model = config.model
  if name != "overrides" and name in model:
    model[name] = value
    return True
  overrides = model.overrides
  unlocked = getattr(overrides, "unlocked", None)
  with unlocked() if unlocked else contextlib.nullcontext():
    overrides[name] = value
  return True


def get_model_option(config, name: str, default=None):
  model = config.model
  if name != "overrides" and name in model:
    return model[name]
  return dict(model.overrides).get(name, default)


def with_mesh_shape(config, mesh_shape):
  """A copy of ``config`` with ``mesh.shape`` replaced."""
  config = copy.deepcopy(config)
  config.mesh.shape = tuple(int(s) for s in mesh_shape)
  return config


def parse_mesh(text: str) -> tuple:
  """"1,-1,1" -> (1, -1, 1): (data, fsdp, model) sizes, at most one -1."""
  try:
    shape = tuple(int(s) for s in text.replace("x", ",").split(","))
  except ValueError:
    raise ValueError(f"--mesh {text!r}: expected 3 integers data,fsdp,model "
                     "(one may be -1)") from None
  if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"--mesh {text!r}: expected 3 integers data,fsdp,model "
                     "(positive, one may be -1)")
  return shape


def resolve_mesh(shape, num_devices: int) -> tuple:
  shape = list(shape)
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
      raise ValueError(f"mesh {tuple(shape)} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh {tuple(shape)} needs {math.prod(shape)} devices; the "
                     f"target has {num_devices}")
  return tuple(shape)


# --------------------------------------------------------------------------
# Shardings


def _shard_bytes(leaf) -> int:
  shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
  return math.prod(shape) * leaf.dtype.itemsize


def state_bytes(abstract_state) -> dict:
  """Per-device bytes of each part of the train state (shard of each leaf)."""
  import jax
  out = {"params": 0, "opt_state": 0, "other": 0, "params_total": 0, "num_params": 0}
  for key, sub in abstract_state.items():
    for leaf in jax.tree_util.tree_leaves(sub):
      part = key if key in ("params", "opt_state") else "other"
      out[part] += _shard_bytes(leaf)
      if key == "params":
        out["params_total"] += math.prod(leaf.shape) * leaf.dtype.itemsize
        out["num_params"] += math.prod(leaf.shape)
  return out


# --------------------------------------------------------------------------
# Devices


def tpu_devices(topology: chips_lib.Topology):
  """Compile-only devices of a TPU topology (needs libtpu, not a TPU)."""
  if not libtpu_available():
    raise ImportError(f"planning for TPU needs libtpu: {INSTALL_HINT}")
  quiet_libtpu_env()
  from jax.experimental import topologies
  try:
    return topologies.get_topology_desc(topology_name=topology.libtpu_name,
                                        platform="tpu").devices
  except Exception as e:  # jax raises JaxRuntimeError for names libtpu rejects
    raise ValueError(f"libtpu rejects topology {topology.libtpu_name!r}: "
                     f"{str(e).splitlines()[0]}") from None


def stand_in_devices(n: int):
  """``n`` CPU devices standing in for GPUs (shardings and tracing only)."""
  import jax
  cpus = jax.devices("cpu")
  if len(cpus) < n:
    raise ValueError(
        f"a GPU plan of {n} devices needs {n} CPU stand-in devices, this process has "
        f"{len(cpus)}: start it with XLA_FLAGS=--xla_force_host_platform_device_count={n} "
        "(`samjax plan` does this itself)")
  return cpus[:n]


# --------------------------------------------------------------------------
# Compile errors


# The two forms of XLA:TPU's out-of-HBM compile error seen with libtpu 0.0.42:
#   "Ran out of memory on HBM, the total memory required for HLO temporaries
#    (291.73G) exceeds available HBM (95.74G)."
#   "Ran out of memory in memory space hbm. Used 120.5G of 95.74G hbm.
#    Exceeded hbm capacity by 24.8G."
_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"
_OOM_TEMP_RE = re.compile(rf"HLO temporaries \({_SIZE}\) exceeds available HBM \({_SIZE}\)")
_OOM_USED_RE = re.compile(rf"Used {_SIZE} of {_SIZE} hbm")
_UNIT = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_hbm_oom(message: str):
  """XLA:TPU out-of-HBM compile error -> (kind, bytes, capacity bytes), or None.

  kind is "temp" (the HLO temporaries alone need ``bytes``) or "total" (the
  whole program needs ``bytes``).
  """
  for kind, regex in (("temp", _OOM_TEMP_RE), ("total", _OOM_USED_RE)):
    m = regex.search(message)
    if m:
      need = float(m.group(1)) * _UNIT[m.group(2)]
      cap = float(m.group(3)) * _UNIT[m.group(4)]
      return kind, int(need), int(cap)
  return None


# --------------------------------------------------------------------------
# The plan


def _cost_dict(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def _log_default(msg: str) -> None:
  print(msg, flush=True)


def plan(config, topology: str | None = None, gpu: int | None = None,
         gpu_kind: str = "h100", mesh_shape=None, config_name: str = "",
         compile: bool = True, log: Callable[[str], None] | None = _log_default
         ) -> PlanReport:
  """Plans one train step of ``config`` on a TPU topology or ``gpu`` GPUs.

  Args:
    config: an experiment config (``samjax.commands.train.load_config``).
    topology: TPU topology ("v5p:4x4x4", "v5p-128", "v5e:16x16").
    gpu: number of GPUs (with ``gpu_kind``) instead of a topology. Nothing
      is compiled for GPUs on a CPU-only host (see ``PlanReport.limitations``).
    mesh_shape: (data, fsdp, model) overriding ``config.mesh.shape``.
    compile: False stops after tracing (bytes and FLOPs only).
    log: progress lines ("lowering...", times); None for silence.

  Returns:
    A ``PlanReport``. Raises ValueError / ImportError (one line) for bad
    topologies, meshes or a missing libtpu.
  """
  import jax

  log = log or (lambda _msg: None)
  if (topology is None) == (gpu is None):
    raise ValueError("give exactly one of topology= or gpu=")
  config = copy.deepcopy(config)
  if mesh_shape is not None:
    config.mesh.shape = tuple(int(s) for s in mesh_shape)

  notes, limitations = [], []
  if topology is not None:
    topo = chips_lib.parse_topology(topology)
    chip = topo.chip
    t = time.perf_counter()
    devices = tpu_devices(topo)
    log(f"[plan] {topo}: {len(devices)} compile-only devices "
        f"({devices[0].device_kind}, {time.perf_counter() - t:.1f}s)")
    per_device_chips = chips_lib.chips_per_device(chip, devices[0])
    target, num_chips = str(topo), topo.num_chips
  else:
    chip = chips_lib.chip_kind(gpu_kind)
    if chip.platform != "gpu":
      raise ValueError(f"--gpu-kind {gpu_kind!r} is not a GPU (use --topology for TPUs)")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if len(gpus) >= gpu:
      devices = gpus[:gpu]
      notes.append(f"compiled for the {gpu} local GPUs ({devices[0].device_kind})")
    else:
      devices = stand_in_devices(gpu)
      compile = False
      limitations.append(
          "no GPU compiler on this host: jax cannot compile for CUDA without a GPU "
          "(compile-only GPU topologies need jax's CUDA plugin and a GPU target "
          "description), so XLA memory (activations/temp), XLA FLOPs and a step "
          "time are not reported. Reported: per-GPU parameter/optimizer/batch bytes "
          "from the shardings and the counted FLOPs; the step time shown is the "
          "compute-bound floor at 100% of peak.")
    per_device_chips = 1.0
    target, num_chips = f"{gpu} x {chip.name}", gpu

  # Resolve "auto" attention the way the target would: the model picks by
  # jax.default_backend(), which is this host's CPU, not the target.
  if chip.platform != "cpu" and get_model_option(config, "attention_impl", "auto") == "auto":
    set_model_option(config, "attention_impl", "xla")
    notes.append("attention_impl auto -> xla (what auto picks on TPU/GPU; on this "
                 "CPU host it would pick chunked)")

  from samjax.train.setup import build_program

  # Mesh and batch checks up front: one-line errors instead of jax's.
  axis_sizes = dict(zip(("data", "fsdp", "model"),
                        resolve_mesh(tuple(config.mesh.shape), len(devices)), strict=True))
  batch_shards = math.prod(axis_sizes[a] for a in tuple(config.batch_axes))
  if int(config.data.batch_size) % batch_shards:
    raise ValueError(f"global batch {config.data.batch_size} does not split over "
                     f"{batch_shards} shards of batch axes {tuple(config.batch_axes)} "
                     f"(mesh {tuple(axis_sizes.values())})")

  t = time.perf_counter()
  prog = build_program(config, devices=devices)
  mesh = tuple(int(s) for s in prog.mesh.devices.shape)
  log(f"[plan] mesh (data, fsdp, model) = {mesh}; program built in "
      f"{time.perf_counter() - t:.1f}s")
  mcfg = prog.model.config
  model_desc = {"variant": str(config.model.variant), "dtype": mcfg.dtype,
                "attention_impl": mcfg.attention_impl,
                "remat_policy": getattr(mcfg, "encoder_remat_policy",
                                        "block" if mcfg.remat else "none"),
                "scan_layers": bool(getattr(mcfg, "scan_layers", False)),
                "image_size": mcfg.image_size,
                "remat_passes": bool(dict(config.sim).get("remat_passes", False))}
  want_scan = get_model_option(config, "scan_layers", None)
  if want_scan is not None and bool(want_scan) != model_desc["scan_layers"]:
    notes.append(f"config asks scan_layers={bool(want_scan)} but the built model has "
                 f"{model_desc['scan_layers']} (build_model does not pass it)")

  # Dims the mesh cannot divide are already replicated by mesh.param_shardings.
  state, step = prog.abstract_state, prog.train_step
  batch = prog.abstract_batch()
  sizes = state_bytes(state)
  sim = dict(config.sim)
  passes = 1 + int(sim.get("num_point_iters", 0)) + int(sim.get("num_mask_only_iters", 0))

  report = PlanReport(
      config=config_name, target=target, chip=chip.name, platform=chip.platform,
      num_chips=num_chips, num_devices=len(devices), mesh_shape=mesh, model=model_desc,
      global_batch=prog.global_batch_size, max_masks=int(config.data.max_masks),
      decoder_passes=passes, hbm_bytes=chip.hbm_bytes,
      peak_flops_per_chip=chip.peak_bf16_flops,
      num_params=sizes["num_params"], param_bytes_total=sizes["params_total"],
      param_bytes=int(sizes["params"] / per_device_chips),
      opt_state_bytes=int(sizes["opt_state"] / per_device_chips),
      other_state_bytes=int(sizes["other"] / per_device_chips),
      batch_bytes=int(sum(_shard_bytes(x) for x in jax.tree_util.tree_leaves(batch))
                      / per_device_chips),
      notes=notes, limitations=limitations)

  with prog.context():
    log("[plan] tracing the train step...")
    t = time.perf_counter()
    traced = step.trace(state, batch)
    counted = flops_lib.count_jaxpr_flops(traced.jaxpr)
    once = flops_lib.count_jaxpr_flops(traced.jaxpr, scan_lengths=False).total
    report.program_flops, report.program_flops_scan_once = counted.total, once
    report.flops_exact = counted.exact
    if not counted.exact:
      notes.append(f"FLOP count is a lower bound: {counted.while_loops} while loops "
                   f"counted once, opaque calls {counted.unknown_calls or 'none'}")
    report.trace_s = time.perf_counter() - t
    log(f"[plan] traced in {report.trace_s:.1f}s: {_fl(counted.total)}/step as compiled")
  report.model_flops = _model_flops(config, devices, state, batch, counted.total, log)

  if compile:
    with prog.context():
      log("[plan] lowering...")
      t = time.perf_counter()
      lowered = traced.lower()
      report.lower_s = time.perf_counter() - t
      log(f"[plan] lowered in {report.lower_s:.1f}s; compiling for {target}... "
          "(this can take minutes)")
      t = time.perf_counter()
      try:
        compiled = lowered.compile()
      except Exception as e:  # the TPU compiler's out-of-HBM is a JaxRuntimeError
        report.compile_s = time.perf_counter() - t
        oom = parse_hbm_oom(str(e))
        if oom is None:
          raise
        kind, need, cap = oom
        need, cap = int(need / per_device_chips), int(cap / per_device_chips)
        report.fits = False
        if kind == "temp":
          # Temporaries alone; the state and batch come on top of them.
          report.xla_temp_bytes = need
          need += report.param_bytes + report.opt_state_bytes + report.batch_bytes
        report.peak_bytes = need
        report.headroom_bytes = cap - need
        notes.append(f"the TPU compiler refused it: {str(e).splitlines()[0][:300]}")
        log(f"[plan] compile stopped after {report.compile_s:.0f}s: does not fit in HBM")
        return _finish(report)
      report.compile_s = time.perf_counter() - t
      log(f"[plan] compiled in {report.compile_s:.1f}s")
    _read_compiled(report, compiled, per_device_chips)
  elif chip.platform == "tpu":
    limitations.append("not compiled (--no-compile): no XLA memory, FLOPs or step time")
  return _finish(report)


def _model_flops(config, devices, state, batch, program_flops, log) -> float:
  """FLOPs of the step with remat off (the MFU convention: recomputation is
  not useful work): encoder remat and ``sim.remat_passes`` (recomputed
  decoder passes) both off. Equal to ``program_flops`` when nothing is
  rematerialised."""
  policy = get_model_option(config, "remat_policy", "none")
  remat = bool(get_model_option(config, "remat", False))
  remat_passes = bool(dict(config.sim).get("remat_passes", False))
  if policy in (None, "none") and not remat and not remat_passes:
    return program_flops
  import jax

  from samjax.train.setup import build_program
  cfg = copy.deepcopy(config)
  set_model_option(cfg, "remat", False)
  set_model_option(cfg, "remat_policy", "none")
  if remat_passes:
    cfg.sim.remat_passes = False
  t = time.perf_counter()
  prog = build_program(cfg, devices=devices)
  shs = jax.tree_util.tree_map(lambda a: a.sharding, state)
  step = jax.jit(prog.train_step.__wrapped__, in_shardings=(shs, prog.batch_sharding),
                 out_shardings=(shs, prog.replicated))
  with prog.context():
    total = flops_lib.count_jaxpr_flops(step.trace(state, batch).jaxpr).total
  log(f"[plan] model FLOPs (remat off) traced in {time.perf_counter() - t:.1f}s: "
      f"{_fl(total)}/step")
  return total


def _read_compiled(report: PlanReport, compiled, per_device_chips: float) -> None:
  report.compiled = True
  mem = compiled.memory_analysis()
  if mem is not None:
    def get(name):
      v = getattr(mem, name, None)
      return None if v is None else int(v / per_device_chips)
    report.xla_argument_bytes = get("argument_size_in_bytes")
    report.xla_output_bytes = get("output_size_in_bytes")
    report.xla_alias_bytes = get("alias_size_in_bytes")
    report.xla_temp_bytes = get("temp_size_in_bytes")
    report.xla_generated_code_bytes = get("generated_code_size_in_bytes")
    parts = [report.xla_argument_bytes, report.xla_output_bytes, report.xla_temp_bytes]
    if None not in parts:
      report.peak_bytes = (sum(parts) - (report.xla_alias_bytes or 0)
                           + (report.xla_generated_code_bytes or 0))
      report.headroom_bytes = report.hbm_bytes - report.peak_bytes
      report.fits = report.headroom_bytes >= 0
  else:
    report.limitations.append("the compiler gave no memory analysis")
  cost = _cost_dict(compiled)
  if "flops" in cost:
    report.xla_flops_per_chip = float(cost["flops"]) / per_device_chips
  if "bytes accessed" in cost:
    report.xla_bytes_accessed_per_chip = float(cost["bytes accessed"]) / per_device_chips
  if cost.get("optimal_seconds", -1) > 0:
    report.xla_optimal_seconds = float(cost["optimal_seconds"])
  else:
    report.limitations.append("the compiler's cost analysis has no optimal_seconds: "
                              "no step-time estimate from XLA")


def _finish(report: PlanReport) -> PlanReport:
  """Step time, throughput and MFU from what the report holds."""
  per_chip_peak = report.peak_flops_per_chip
  if report.xla_optimal_seconds:
    # The cost model, like cost_analysis' FLOPs, counts a loop body once:
    # scale it by the matmul FLOPs the loops repeat (time ~ FLOPs there).
    scale = 1.0
    if report.program_flops and report.program_flops_scan_once:
      scale = report.program_flops / report.program_flops_scan_once
    report.step_time_s = report.xla_optimal_seconds * scale
    report.step_time_source = (
        "XLA TPU cost model (optimal_seconds)" if abs(scale - 1) < 1e-9 else
        f"XLA TPU cost model (optimal_seconds {report.xla_optimal_seconds:.3f}s) x "
        f"{scale:.2f} for scan bodies it counts once")
  elif report.program_flops and report.platform == "gpu" and not report.compiled:
    report.step_time_s = report.program_flops / report.num_chips / per_chip_peak
    report.step_time_source = "compute floor: program FLOPs at 100% of peak (not a prediction)"
  if report.step_time_s:
    report.images_per_s_per_chip = report.global_batch / report.step_time_s / report.num_chips
    report.chip_seconds_per_image = report.step_time_s * report.num_chips / report.global_batch
    if report.model_flops:
      report.mfu = report.model_flops / report.num_chips / (report.step_time_s * per_chip_peak)
    if report.program_flops:
      report.hfu = report.program_flops / report.num_chips / (report.step_time_s * per_chip_peak)
  if report.fits is None and report.platform == "gpu":
    static = report.param_bytes + report.opt_state_bytes + report.batch_bytes
    report.notes.append(f"static state alone (params + optimizer + batch) is "
                        f"{static / report.hbm_bytes:.1%} of HBM; activations unknown")
  return report


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


def _fl(x) -> str:
  """FLOPs with a unit that keeps 3 significant digits."""
  if x is None:
    return "-"
  for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if abs(x) >= size:
      return f"{x / size:.3g} {unit}"
  return f"{x:.3g} FLOP"


def format_report(r: PlanReport) -> str:
  m = r.model
  rows = [
      ("config", r.config or "-"),
      ("target", f"{r.target}; {r.num_devices} devices, mesh (data, fsdp, model) = "
                 f"{tuple(r.mesh_shape)}"),
      ("model", f"{m['variant']} {m['image_size']}px, {m['dtype']}, remat "
                f"{m['remat_policy']}, scan_layers {m['scan_layers']}, attention "
                f"{m['attention_impl']}"),
      ("batch", f"{r.global_batch} images x {r.max_masks} masks, {r.decoder_passes} "
                "decoder passes" + (" (follow-ups rematerialised)"
                                    if m.get("remat_passes") else "")),
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
      ("model FLOPs / step", _fl(r.model_flops) + ("" if r.model_flops is None else
                                                    f" ({_fl(r.model_flops_per_chip)} per chip)")),
      ("program FLOPs / step", f"{_fl(r.program_flops)} (remat recompute in; loop "
                               f"bodies once: {_fl(r.program_flops_scan_once)})"),
      ("XLA FLOPs / chip", _fl(r.xla_flops_per_chip) + " (loop bodies once, all ops)"),
      ("step time", _sec(r.step_time_s) +
       (f"  [{r.step_time_source}]" if r.step_time_source else "")),
      ("images / s / chip", _f(r.images_per_s_per_chip, "", 1, ".2f")),
      ("chip-seconds / image", _f(r.chip_seconds_per_image, "", 1, ".3g")),
      ("MFU (model) / HFU", f"{_f(r.mfu, '', 0.01, '.1f')}% / {_f(r.hfu, '', 0.01, '.1f')}%"
       if r.mfu is not None else "-"),
      ("trace / lower / compile", f"{_f(r.trace_s, ' s', 1, '.0f')} / "
       f"{_f(r.lower_s, ' s', 1, '.0f')} / {_f(r.compile_s, ' s', 1, '.0f')}"),
  ]
  width = max(len(k) for k, _ in rows)
  lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
  for n in r.notes:
    lines.append(f"  note: {n}")
  for n in r.limitations:
    lines.append(f"  not reported: {n}")
  return "\n".join(lines)


def format_sweep(reports) -> str:
  """One line per planned variant, best fitting (fastest) marked."""
  best = best_report(reports)
  head = (f"  {'mesh':<14}{'remat':<15}{'peak/chip':>12}{'fits':>6}{'step s':>9}"
          f"{'img/s/chip':>12}{'MFU':>7}{'compile s':>11}")
  lines = [head]
  for r in reports:
    if isinstance(r, tuple):  # (label, error)
      lines.append(f"  {r[0]:<29}failed: {r[1]}")
      continue
    mark = "  <- best" if r is best else ""
    lines.append(
        f"  {tuple(r.mesh_shape)!s:<14}{r.model['remat_policy']:<15}"
        f"{_b(r.peak_bytes):>12}{'-' if r.fits is None else ('yes' if r.fits else 'NO'):>6}"
        f"{_f(r.step_time_s, '', 1, '.3f'):>9}{_f(r.images_per_s_per_chip, '', 1, '.2f'):>12}"
        f"{_f(r.mfu, '%', 0.01, '.1f'):>7}{_f(r.compile_s, '', 1, '.0f'):>11}{mark}")
  return "\n".join(lines)


def best_report(reports):
  ok = [r for r in reports if isinstance(r, PlanReport) and r.fits and r.step_time_s]
  return min(ok, key=lambda r: r.step_time_s) if ok else None

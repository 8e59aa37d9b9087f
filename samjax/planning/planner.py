"""``plan(config, topology=...)``: compile the real train step for chips that
are not here and report memory, FLOPs, step time and MFU per chip.

The program is ``samjax.train.setup.build_program(config, devices)``, the
same jitted, donated step ``samjax train`` runs, lowered onto the target's
devices (``samjax.planning.devices``) and compiled there: by the TPU
compiler on this host's CPU for a TPU topology. What comes back:

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

A program the TPU compiler refuses for HBM becomes a report with
``fits=False`` and the compiler's numbers (``samjax.planning.hbm_errors``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

from samjax.planning import dcn as dcn_lib
from samjax.planning import devices as devices_lib
from samjax.planning import flops as flops_lib
from samjax.planning.hbm_errors import parse_hbm_oom
from samjax.planning.report import PlanReport, format_flops, shard_bytes, state_bytes


def _log_default(msg: str) -> None:
  print(msg, flush=True)


def plan(config, topology: str | None = None, gpu: int | None = None,
         gpu_kind: str = "h100", mesh_shape=None, config_name: str = "",
         compile: bool = True, log: Callable[[str], None] | None = _log_default,
         num_slices: int = 1) -> PlanReport:
  """Plans one train step of ``config`` on a TPU topology or ``gpu`` GPUs.

  Args:
    config: an experiment config (``samjax.commands.train.load_config``).
    topology: TPU topology ("v5p:4x4x4", "v5p-128", "v5e:16x16").
    gpu: number of GPUs (with ``gpu_kind``) instead of a topology. Nothing
      is compiled for GPUs on a CPU-only host (see ``PlanReport.limitations``).
    mesh_shape: (data, fsdp, model) overriding ``config.mesh.shape`` (per
      slice; ``config.mesh.dcn`` places the slices).
    compile: False stops after tracing (bytes and FLOPs only).
    log: progress lines ("lowering...", times); None for silence.
    num_slices: that many slices of ``topology`` joined over the data-center
      network; the report lists what the compiled step sends across them.

  Returns:
    A ``PlanReport``. Raises ValueError / ImportError (one line) for bad
    topologies, meshes or a missing libtpu.
  """
  from samjax.mesh import make_mesh
  from samjax.train.setup import build_program

  log = log or (lambda _msg: None)
  if (topology is None) == (gpu is None):
    raise ValueError("give exactly one of topology= or gpu=")
  config = copy.deepcopy(config)
  if mesh_shape is not None:
    config.mesh.shape = tuple(int(s) for s in mesh_shape)
  target = devices_lib.resolve_target(topology, gpu, gpu_kind, log, num_slices)
  notes = target.notes + _attention_for_target(config, target.chip)
  # The mesh must cover every chip of the target (make_mesh would quietly
  # take a subset, right for a 1-device run on a big host, wrong for a plan);
  # whether the batch splits over it is build_program's check.
  layout = []
  make_mesh(tuple(config.mesh.shape), target.devices, tuple(config.mesh.dcn), use_all=True,
            log=layout.append)
  notes.append(layout[0].removeprefix("[mesh] "))

  t = time.perf_counter()
  prog = build_program(config, devices=target.devices)
  log(f"{layout[0]}; program built in {time.perf_counter() - t:.1f}s")
  batch = prog.abstract_batch()
  report = _new_report(config, config_name, target, prog, batch, notes)
  traced = _trace_and_count(report, prog, batch, log)
  report.model_flops = _model_flops(config, target.devices, prog.abstract_state, batch,
                                    report.program_flops, log)
  if compile and target.can_compile:
    _compile_into(report, prog, traced, target, log)
    if target.num_slices > 1 and report.fits and report.xla_optimal_seconds is None:
      _one_slice_step_time(report, config, topology, target.num_slices, log)
  elif target.chip.platform == "tpu":
    report.limitations.append("not compiled (--no-compile): no XLA memory, FLOPs or step time")
  return _finish(report)


def _one_slice_step_time(report: PlanReport, config, topology: str, num_slices: int,
                         log) -> None:
  """Fills the step time of a multi-slice plan from one slice.

  The TPU cost model prices no program with cross-slice transfers (its
  ``optimal_seconds`` comes back negative), so one slice's step on its share
  of the global batch is compiled and priced instead: the same per-chip
  work, without the DCN transfers the report lists beside it.
  """
  batch = int(config.data.batch_size)
  if batch % num_slices:
    report.limitations.append(f"no step time: the batch of {batch} does not split over "
                              f"{num_slices} slices for the one-slice estimate")
    return
  one = copy.deepcopy(config)
  one.data.batch_size = batch // num_slices
  one.mesh.dcn = (1, 1, 1)
  log(f"[plan] the TPU cost model prices no cross-slice program: compiling one slice "
      f"on {batch // num_slices} images for the step time...")
  sub = plan(one, topology=topology, config_name=report.config, log=log)
  if not sub.step_time_s:
    report.limitations.append("no step time: the one-slice program has none either")
    return
  report.limitations = [x for x in report.limitations if "optimal_seconds" not in x]
  report.step_time_s = sub.step_time_s
  report.step_time_source = (f"one slice's step on 1/{num_slices} of the batch "
                             f"({sub.step_time_source}); DCN transfers not priced")
  report.notes.append(f"the one-slice estimate compiled in {sub.compile_s:.0f}s, "
                      f"peak {sub.peak_bytes / 2**30:.2f} GiB/chip")


def _attention_for_target(config, chip) -> list[str]:
  """Resolves ``attention_impl="auto"`` the way the target would (the model
  picks by ``jax.default_backend()``, which is this host's CPU)."""
  from samjax.train.setup import build_model
  if chip.platform != "cpu" and build_model(config).config.attention_impl == "auto":
    with config.model.overrides.unlocked():  # a Python config may have replaced it whole
      config.model.overrides.attention_impl = "xla"
    return ["attention_impl auto -> xla (what auto picks on TPU/GPU; on this CPU host "
            "it would pick chunked)"]
  return []


def _new_report(config, config_name: str, target, prog, batch: dict,
                notes: list) -> PlanReport:
  """The report's static part: target, model, batch and state bytes per chip.
  (Dims the mesh cannot divide are already replicated by mesh.param_shardings.)"""
  import jax

  mcfg, sim = prog.model.config, config.sim
  model_desc = {"variant": str(config.model.variant), "dtype": mcfg.dtype,
                "attention_impl": mcfg.attention_impl, "remat_policy": mcfg.remat_policy,
                "scan_layers": mcfg.scan_layers, "image_size": mcfg.image_size,
                "decoder_form": str(config.decoder_form),
                "eager_chunk_grads": bool(sim.eager_chunk_grads),
                "prompt_chunk": int(config.prompt_chunk),
                "microbatches": int(prog.microbatches)}
  sizes = state_bytes(prog.abstract_state)
  passes = 1 + int(sim.num_point_iters) + int(sim.num_mask_only_iters)
  per = target.per_device_chips
  chip = target.chip
  return PlanReport(
      config=config_name, target=target.name, chip=chip.name, platform=chip.platform,
      num_chips=target.num_chips, num_devices=len(target.devices),
      mesh_shape=tuple(int(s) for s in prog.mesh.devices.shape), model=model_desc,
      num_slices=target.num_slices, dcn_shape=tuple(int(s) for s in _dcn_shape(prog.mesh)),
      global_batch=prog.global_batch_size, max_masks=int(config.data.max_masks),
      decoder_passes=passes, hbm_bytes=chip.hbm_bytes,
      peak_flops_per_chip=chip.peak_bf16_flops,
      num_params=sizes["num_params"], param_bytes_total=sizes["params_total"],
      param_bytes=int(sizes["params"] / per),
      opt_state_bytes=int(sizes["opt_state"] / per),
      other_state_bytes=int(sizes["other"] / per),
      batch_bytes=int(sum(shard_bytes(x) for x in jax.tree_util.tree_leaves(batch)) / per),
      notes=notes, limitations=list(target.limitations))


def _dcn_shape(mesh) -> tuple:
  """Slices per mesh axis: how many distinct slices one axis line spans."""
  import numpy as np
  slices = np.vectorize(lambda d: getattr(d, "slice_index", 0) or 0)(mesh.devices)
  return tuple(len(np.unique(np.moveaxis(slices, i, 0)[:, 0, 0]))
               for i in range(slices.ndim))


def _trace_and_count(report: PlanReport, prog, batch, log):
  """Traces the train step; fills the program's FLOPs (scans counted by their
  trip count, and once, as XLA counts them). Returns the traced step."""
  with prog.context():
    log("[plan] tracing the train step...")
    t = time.perf_counter()
    traced = prog.train_step.trace(prog.abstract_state, batch)
    counted = flops_lib.count_jaxpr_flops(traced.jaxpr)
    once = flops_lib.count_jaxpr_flops(traced.jaxpr, scan_lengths=False).total
  report.program_flops, report.program_flops_scan_once = counted.total, once
  report.flops_exact = counted.exact
  if not counted.exact:
    report.notes.append(f"FLOP count is a lower bound: {counted.while_loops} while loops "
                        f"counted once, opaque calls {counted.unknown_calls or 'none'}")
  report.trace_s = time.perf_counter() - t
  log(f"[plan] traced in {report.trace_s:.1f}s: {format_flops(counted.total)}/step "
      "as compiled")
  return traced


def _compile_into(report: PlanReport, prog, traced, target, log) -> None:
  """Lowers and compiles; fills memory, XLA FLOPs and the cost model's time,
  or ``fits=False`` when the TPU compiler refuses the program for HBM."""
  per = target.per_device_chips
  with prog.context():
    log("[plan] lowering...")
    t = time.perf_counter()
    lowered = traced.lower()
    report.lower_s = time.perf_counter() - t
    log(f"[plan] lowered in {report.lower_s:.1f}s; compiling for {target.name}... "
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
      need, cap = int(need / per), int(cap / per)
      report.fits = False
      if kind == "temp":
        # Temporaries alone; the state and batch come on top of them.
        report.xla_temp_bytes = need
        need += report.param_bytes + report.opt_state_bytes + report.batch_bytes
      report.peak_bytes = need
      report.headroom_bytes = cap - need
      report.notes.append(f"the TPU compiler refused it: {str(e).splitlines()[0][:300]}")
      log(f"[plan] compile stopped after {report.compile_s:.0f}s: does not fit in HBM")
      return
    report.compile_s = time.perf_counter() - t
    log(f"[plan] compiled in {report.compile_s:.1f}s")
  _read_compiled(report, compiled, per)
  if target.num_slices > 1:
    report.dcn_transfers = [dataclasses.asdict(x)
                            for x in dcn_lib.dcn_transfers(compiled.as_text())]


def _cost_dict(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def _model_flops(config, devices, state, batch, program_flops, log) -> float:
  """FLOPs of the step with the encoder's remat off (the MFU convention:
  recomputation is not useful work). Equal to ``program_flops`` when
  nothing is rematerialised."""
  if config.model.remat_policy == "none":
    return program_flops
  import jax

  from samjax.train.setup import build_program
  cfg = copy.deepcopy(config)
  cfg.model.remat_policy = "none"
  t = time.perf_counter()
  prog = build_program(cfg, devices=devices)
  shs = jax.tree_util.tree_map(lambda a: a.sharding, state)
  step = jax.jit(prog.train_step.__wrapped__, in_shardings=(shs, prog.batch_sharding),
                 out_shardings=(shs, prog.replicated))
  with prog.context():
    total = flops_lib.count_jaxpr_flops(step.trace(state, batch).jaxpr).total
  log(f"[plan] model FLOPs (remat off) traced in {time.perf_counter() - t:.1f}s: "
      f"{format_flops(total)}/step")
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



"""``samjax plan``: compile the real train step for a TPU pod on this machine's
CPU and report per-chip memory, FLOPs, step time and MFU."""

from __future__ import annotations

import argparse
import os
import sys
import time

HELP = """\
Plan a training run for chips that are not here: lower and compile the exact
jitted train step `samjax train` runs (same config, mesh, shardings, donated
state) for a TPU topology, using libtpu's compile-only devices and the TPU
compiler on this host's CPU, then report per chip:

  * bytes of parameters, optimizer state and batch (from the shardings);
  * XLA's memory analysis (argument / output / temp bytes), the peak against
    the chip's HBM, whether it fits and by how much (the TPU compiler refuses
    a program that does not fit; that is reported as "NO, over by ...");
  * model FLOPs per step (matmuls counted through scans, remat off: the MFU
    convention), the program's FLOPs (remat recompute in) and XLA's count
    (which counts a scan / while body once);
  * step time from the TPU cost model, corrected for the scan bodies it
    counts once; images/s/chip, chip-seconds/image and the implied MFU;
  * trace, lower and compile wall times.

  samjax plan --config sam_vit_h_sa1b --topology v5p-128
  samjax plan --config experiments/configs/sam_vit_b_sa1b.py --topology v5p:4x4x4 \\
      --mesh 2,-1,1 --config.model.remat_policy=dots_saveable --json plan.json
  samjax plan --config sam_vit_h_sa1b --topology v5e:16x16 --sweep
  samjax plan --config sam_vit_h_sa1b --gpu 8 --gpu-kind h100

Compiling takes MINUTES on a CPU. Measured on a 2-core host, the ViT-H
recipe for 64 v5p chips (4 images per chip): 6.5 min with the recipe's
config.microbatches=0 (the compiler sees one image per chip), 18-28 min with
microbatches=1; ~2 min to an out-of-HBM verdict; a tiny test model ~1
min. --no-compile stops after tracing (state bytes and FLOPs in well under
a minute). Progress lines show each phase. The numbers are the compiler's
model of the chip, not a measurement: a real run also pays for input, host
overheads and collectives the cost model misjudges.

--topology: KIND:GRID as libtpu names it (v5p:4x4x4, v5e:16x16, v6e:8x16,
v4:2x2x4) or a Cloud TPU type (v5p-128, v5e-256, v6e-256, v4-32). For v4 and
v5p the Cloud number counts TensorCores, 2 per chip: v5p-128 = 64 chips =
4x4x4. For v5e and v6e it counts chips: v5e-256 = 16x16.

--mesh data,fsdp,model: the mesh axis sizes (one may be -1: the rest of the
chips), overriding config.mesh.shape. The global batch (config.data.
batch_size) must divide over data x fsdp. Devices are laid out along the
chips' physical links (jax's mesh_utils.create_device_mesh); the report's
note says how.

--num-slices N: N slices of --topology (each one KIND:GRID or KIND-N)
joined over the data-center network (DCN), as a multi-slice job runs them:
  samjax plan --config sam_vit_h_sa1b --topology v5p-64 --num-slices 2
--mesh is then the mesh of one slice, and config.mesh.dcn (or --dcn) says
how many slices each mesh axis spans (default -1,1,1: every slice on data,
so only the data-parallel gradient reduction crosses DCN). The report lists
what the compiled step sends across slices, per transfer kind (all-reduce,
all-gather, ...): count and bytes per chip per step. The step time is the
TPU cost model's, which does not price DCN transfers: weigh those bytes
against the network's bandwidth yourself.

--sweep: plans a few meshes (all-FSDP, data x FSDP, a little model
parallelism; --sweep-meshes to choose) times remat policies (--sweep-remat;
only when the model has remat_policy) times microbatch counts
(--sweep-microbatches, e.g. 1,0), one compile each, and names the fastest
variant that fits. Budget minutes per compile.

config.microbatches: each step's batch as that many sequential microbatches
(gradient accumulation; same gradient). 0 = one image per chip per
microbatch: the compiler then sees a one-image-per-chip program, which
compiles several times faster than 4 images per chip and needs a fraction of
the activation memory.

--gpu N [--gpu-kind h100|h200|a100-80gb|a100-40gb]: N GPUs. On a host with
that many GPUs the step is compiled for them; on a CPU-only host jax cannot
compile for CUDA, so only what needs no GPU compiler is reported (per-GPU
parameter / optimizer / batch bytes, model FLOPs, the compute floor at 100%
of peak) and the limitation is printed.

Needs the plan extra, pip install 'samjax[plan]': the train step's packages,
and for TPU topologies libtpu 0.0.42.* (the version jax 0.10 pins).
"""


def register(subparsers):
  p = subparsers.add_parser("plan", help="compile the train step for a TPU pod on "
                            "this CPU: memory, FLOPs, step time, MFU",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, metavar="NAME_OR_FILE[:ARG]",
                 help="a registered config name or a config .py file, optionally "
                      "with :ARG; then --config.a.b=value overrides")
  target = p.add_mutually_exclusive_group(required=True)
  target.add_argument("--topology", help="TPU topology: v5p:4x4x4, v5p-128, v5e:16x16, ...")
  target.add_argument("--gpu", type=int, metavar="N", help="plan for N GPUs instead")
  p.add_argument("--gpu-kind", default="h100",
                 help="GPU kind for --gpu: h100, h200, a100-80gb, a100-40gb (default h100)")
  p.add_argument("--mesh", metavar="DATA,FSDP,MODEL",
                 help="mesh axis sizes per slice (one may be -1), overriding "
                      "config.mesh.shape")
  p.add_argument("--num-slices", type=int, default=1, metavar="N",
                 help="N slices of --topology joined over the data-center network "
                      "(DCN); config.mesh.dcn places them (default: all on data)")
  p.add_argument("--dcn", metavar="DATA,FSDP,MODEL",
                 help="slices per mesh axis (one may be -1), overriding config.mesh.dcn")
  p.add_argument("--sweep", action="store_true",
                 help="plan several meshes x remat policies and name the best that fits")
  p.add_argument("--sweep-meshes", default="1,-1,1;2,-1,1;1,-1,2",
                 help="';'-separated meshes for --sweep (default: %(default)s)")
  p.add_argument("--sweep-remat", default="block,dots_saveable",
                 help="','-separated remat policies for --sweep (default: %(default)s)")
  p.add_argument("--sweep-microbatches", default="",
                 help="','-separated config.microbatches values for --sweep (0 = one "
                      "image per chip per microbatch, 1 = off; default: the config's)")
  p.add_argument("--no-compile", action="store_true",
                 help="stop after tracing: state bytes and FLOPs only (seconds, not minutes)")
  p.add_argument("--json", metavar="OUT",
                 help="also write the report(s) as JSON (a local, gs:// or s3:// path)")
  # No compilation cache: compile time is one of the things plan measures.
  p.set_defaults(func=run, accepts_overrides=True, compile_cache=False)


def _prepare_jax(args) -> None:
  """Process-wide settings that must precede jax's backend start-up.

  The jax platform is left alone: with libtpu installed and no TPU, jax's
  backend start-up tries the TPU plugin and falls back to the CPU as fast as
  without libtpu (measured), and the compile-only devices need no backend.
  """
  from samjax.hardware import quiet_libtpu_env
  quiet_libtpu_env()
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    return
  if args.gpu and "xla_force_host_platform_device_count" not in os.environ.get(
      "XLA_FLAGS", ""):
    # CPU stand-ins for the GPUs when none are here (shardings, tracing).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.gpu}")


def _check_extra(args) -> None:
  """The `plan` extra's packages (libtpu only for --topology), or one line naming it."""
  from samjax import extras
  absent = [m for m in extras.missing("plan") if m != "libtpu" or args.topology is not None]
  if absent:
    raise extras.MissingExtraError(extras.message("samjax plan", "plan", absent))


def run(args) -> int:
  from samjax.commands.train import load_config
  from samjax.planning import chips, devices, planner, report

  # Cheap checks first: a bad name or a missing libtpu is one line, at once.
  _check_extra(args)
  mesh = report.parse_mesh(args.mesh) if args.mesh else None
  dcn = report.parse_mesh(args.dcn, "--dcn") if args.dcn else None
  if args.num_slices < 1:
    raise ValueError(f"--num-slices {args.num_slices}: needs 1 or more")
  if args.topology is not None:
    chips.parse_topology(args.topology)
    if not devices.libtpu_available():
      raise ImportError(f"planning for TPU needs libtpu: {devices.INSTALL_HINT}")
  else:
    if args.gpu < 1:
      raise ValueError("--gpu N needs N >= 1")
    if args.num_slices != 1:
      raise ValueError("--num-slices is for TPU topologies (GPU hosts: --config.mesh.dcn)")
    if chips.chip_kind(args.gpu_kind).platform != "gpu":
      raise ValueError(f"--gpu-kind {args.gpu_kind!r} is not a GPU kind")
  config = load_config(args.config, getattr(args, "overrides", ()))
  if dcn is not None:
    config.mesh.dcn = dcn
  if args.json:
    from data_pipelines import atomic_io
    atomic_io.check_output_file(args.json, "--json")  # before minutes of compiling
  _prepare_jax(args)

  common = dict(topology=args.topology, gpu=args.gpu, gpu_kind=args.gpu_kind,
                config_name=args.config, compile=not args.no_compile,
                num_slices=args.num_slices)
  t0 = time.perf_counter()
  if not args.sweep:
    rep = planner.plan(config, mesh_shape=mesh, **common)
    print(f"\nsamjax plan: {args.config} on {rep.target}")
    print(rep.table())
    results = [rep]
  else:
    results = _sweep(args, config, common)
  print(f"\n(total {time.perf_counter() - t0:.0f}s)")
  if args.json:
    write_json_report(args.json, results, args.sweep)
    print(f"wrote {args.json}")
  return 0


def write_json_report(path: str, results: list, sweep: bool) -> None:
  """The report(s) as JSON, written atomically (one object on a bucket): one
  report's dict, or for a sweep a list with ``{"variant", "error"}`` for
  variants that could not be planned."""
  from data_pipelines import atomic_io
  from samjax.planning import report
  out = [r.to_dict() if isinstance(r, report.PlanReport) else
         {"variant": r[0], "error": r[1]} for r in results]
  atomic_io.write_json(path, out[0] if len(out) == 1 and not sweep else out, indent=2)


def _sweep(args, config, common) -> list:
  from samjax.planning import planner, report
  meshes = [report.parse_mesh(m) for m in args.sweep_meshes.split(";") if m.strip()]
  policies = [p.strip() for p in args.sweep_remat.split(",") if p.strip()]
  micro = [int(m) for m in args.sweep_microbatches.split(",") if m.strip()] or [None]
  variants = [(m, p, mb) for m in meshes for p in policies for mb in micro]
  print(f"[sweep] {len(variants)} variants, one compile each")
  results = []
  for i, (mesh, policy, mb) in enumerate(variants, 1):
    label = f"mesh {mesh}, remat {policy}" + ("" if mb is None else f", microbatches {mb}")
    print(f"\n[sweep {i}/{len(variants)}] {label}")
    cfg = report.with_mesh_shape(config, mesh)
    cfg.model.remat_policy = policy
    if mb is not None:
      cfg.microbatches = mb
    try:
      rep = planner.plan(cfg, mesh_shape=mesh, **common)
    except (ValueError, ImportError) as e:  # e.g. a mesh the batch does not divide
      print(f"[sweep] {label}: {e}", file=sys.stderr)
      results.append((label, str(e).splitlines()[0]))
      continue
    print(rep.table())
    results.append(rep)
  print("\nsweep summary:")
  print(report.format_sweep(results))
  best = report.best_report(results)
  if best is None:
    print("no variant fits (or none has a step time)")
  else:
    print(f"best: mesh {tuple(best.mesh_shape)}, remat {best.model['remat_policy']}, "
          f"microbatches {best.model['microbatches']}: "
          f"{best.step_time_s:.3f} s/step, {best.images_per_s_per_chip:.2f} img/s/chip")
  return results

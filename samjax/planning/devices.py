"""The devices a plan compiles for: TPU topologies from libtpu, or GPUs.

TPU devices are libtpu's compile-only devices (``jax.experimental.
topologies``): real TPU targets, compiled for on this host's CPU without a
TPU. GPUs are compiled for only when this host has that many; otherwise CPU
devices stand in for them (shardings and tracing, no compile).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from samjax.hardware import installed, quiet_libtpu_env
from samjax.planning import chips as chips_lib

INSTALL_HINT = "pip install 'samjax[plan]'  (or: pip install \"libtpu==0.0.42.*\")"


def libtpu_available() -> bool:
  return installed("libtpu")


def tpu_devices(topology: chips_lib.Topology, num_slices: int = 1):
  """Compile-only devices of ``num_slices`` slices of a TPU topology (needs
  libtpu, not a TPU); with several slices each device has a ``slice_index``."""
  if not libtpu_available():
    raise ImportError(f"planning for TPU needs libtpu: {INSTALL_HINT}")
  quiet_libtpu_env()
  from jax.experimental import topologies
  extra = {"num_slices": num_slices} if num_slices > 1 else {}
  try:
    return topologies.get_topology_desc(topology_name=topology.libtpu_name,
                                        platform="tpu", **extra).devices
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


@dataclasses.dataclass
class Target:
  """What a plan compiles for.

  Attributes:
    name: "v5p:4x4x4 (64 chips)" or "8 x h100".
    chip: the chip kind (HBM, peak FLOP/s).
    devices: the jax devices of the mesh (compile-only TPU devices, local
      GPUs, or CPU stand-ins).
    num_chips: chips in the target.
    per_device_chips: chips per jax device (a v4 device is half a chip).
    can_compile: False where only shapes and FLOPs can be had (GPUs that are
      not on this host).
    notes / limitations: lines for the report.
    num_slices: TPU slices joined over the data-center network.
  """
  name: str
  chip: chips_lib.ChipKind
  devices: list
  num_chips: int
  per_device_chips: float
  can_compile: bool
  notes: list
  limitations: list
  num_slices: int = 1


GPU_LIMITATION = (
    "no GPU compiler on this host: jax cannot compile for CUDA without a GPU "
    "(compile-only GPU topologies need jax's CUDA plugin and a GPU target "
    "description), so XLA memory (activations/temp), XLA FLOPs and a step "
    "time are not reported. Reported: per-GPU parameter/optimizer/batch bytes "
    "from the shardings and the counted FLOPs; the step time shown is the "
    "compute-bound floor at 100% of peak.")


def resolve_target(topology: str | None, gpu: int | None, gpu_kind: str,
                   log: Callable[[str], None], num_slices: int = 1) -> Target:
  """The ``Target`` of ``num_slices`` slices of a TPU ``topology``, or of
  ``gpu`` GPUs of ``gpu_kind``."""
  import jax

  if num_slices < 1:
    raise ValueError(f"--num-slices {num_slices}: needs 1 or more")
  if topology is not None:
    topo = chips_lib.parse_topology(topology)
    t = time.perf_counter()
    devices = tpu_devices(topo, num_slices)
    name = str(topo) if num_slices == 1 else f"{num_slices} slices x {topo}"
    log(f"[plan] {name}: {len(devices)} compile-only devices "
        f"({devices[0].device_kind}, {time.perf_counter() - t:.1f}s)")
    return Target(name, topo.chip, list(devices), topo.num_chips * num_slices,
                  chips_lib.chips_per_device(topo.chip, devices[0]), True, [], [],
                  num_slices)
  if num_slices != 1:
    raise ValueError("--num-slices is for TPU topologies (GPU hosts: --config.mesh.dcn)")
  chip = chips_lib.chip_kind(gpu_kind)
  if chip.platform != "gpu":
    raise ValueError(f"--gpu-kind {gpu_kind!r} is not a GPU (use --topology for TPUs)")
  name = f"{gpu} x {chip.name}"
  gpus = [d for d in jax.devices() if d.platform == "gpu"]
  if len(gpus) >= gpu:
    return Target(name, chip, gpus[:gpu], gpu, 1.0, True,
                  [f"compiled for the {gpu} local GPUs ({gpus[0].device_kind})"], [])
  return Target(name, chip, stand_in_devices(gpu), gpu, 1.0, False, [], [GPU_LIMITATION])

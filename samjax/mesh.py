"""Meshes and shardings for training and inference.

The mesh has axes (``data``, ``fsdp``, ``model``), laid out along the
physical links and across slices by ``samjax.mesh_devices``; logical axis names on
params/activations map to them through rules from the experiment config
(``samjax.logical_axes.DEFAULT_LOGICAL_RULES`` by default). Shardings of the
whole train state are derived from ``jax.eval_shape`` so nothing is ever
materialised unsharded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from samjax import mesh_devices
from samjax.hardware import has_accelerator, tpu_present

MESH_AXES = ("data", "fsdp", "model")
TOP_LEVEL = ("image_encoder", "prompt_encoder", "mask_decoder")


def maybe_initialize_distributed() -> None:
  """``jax.distributed.initialize()`` when launched as one of several processes.

  Triggered by JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID),
  or by a cluster jax configures itself: a TPU VM (its metadata names the
  slice's other hosts; one host initialises as a group of one), a SLURM job
  or an Open MPI launch of more than one task.
  """
  if jax.distributed.is_initialized():
    return
  addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if addr:
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not has_accelerator():
      # Cross-process collectives on CPU need an explicit implementation.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=addr,
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif _cluster_launch():
    jax.distributed.initialize()


def _cluster_launch() -> bool:
  """A launcher jax reads its process group from: a TPU VM, or SLURM / Open
  MPI with more than one task (one task is a plain single-process run)."""
  def tasks(*names):
    return max([int(os.environ.get(n, "1") or 1) for n in names])
  return (tpu_present() or tasks("SLURM_NTASKS", "SLURM_NPROCS") > 1
          or tasks("OMPI_COMM_WORLD_SIZE") > 1)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int, *,
                       use_all: bool = False) -> tuple[int, int, int]:
  """(data, fsdp, model) with one -1 resolved -> the shape a mesh over
  ``num_devices`` devices gets.

  Without -1 and with fewer slots than devices the shape stands as given
  (``make_mesh`` then takes the first devices: a 1-device run on an 8-device
  host), unless ``use_all``: a plan for a pod must cover every chip.
  """
  shape = [int(s) for s in shape]
  if len(shape) != 3:
    raise ValueError(f"mesh shape {shape} must have 3 entries (data, fsdp, model)")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    if num_devices % known:
      raise ValueError(f"mesh shape {tuple(shape)} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  need = int(np.prod(shape))
  if need != num_devices and (use_all or need > num_devices or need <= 0):
    raise ValueError(f"mesh shape {tuple(shape)} needs {need} devices, "
                     f"{num_devices} available")
  return tuple(shape)


def resolve_dcn_shape(dcn: Sequence[int], num_slices: int) -> tuple[int, int, int]:
  """Slices per (data, fsdp, model) axis, one -1 taking the rest of the
  ``num_slices`` slices; the product must be ``num_slices``."""
  dcn = [int(s) for s in dcn]
  if len(dcn) != 3 or dcn.count(-1) > 1 or any(s == 0 or s < -1 for s in dcn):
    raise ValueError(f"mesh.dcn {tuple(dcn)} must be 3 positive slice counts "
                     "(data, fsdp, model), one may be -1")
  if -1 in dcn:
    known = math.prod(s for s in dcn if s != -1)
    if num_slices % known:
      raise ValueError(f"mesh.dcn {tuple(dcn)} does not divide {num_slices} slices")
    dcn[dcn.index(-1)] = num_slices // known
  if math.prod(dcn) != num_slices:
    raise ValueError(f"mesh.dcn {tuple(dcn)} places {math.prod(dcn)} slices; the devices "
                     f"form {num_slices} (TPU slices, or processes on GPU hosts)")
  return tuple(dcn)


def make_mesh(shape: Sequence[int], devices=None, dcn: Sequence[int] = (-1, 1, 1), *,
              slice_of: Callable | None = None, use_all: bool = False,
              log: Callable[[str], None] | None = None) -> Mesh:
  """The (data, fsdp, model) mesh, laid out the way the devices are wired.

  Args:
    shape: (data, fsdp, model) devices per slice (on one slice: the whole
      mesh); one -1 takes the rest. Without -1 and with fewer slots than
      devices on one slice, the first devices are used (e.g. (1, 1, 1) for a
      single-device run on a multi-device host), unless ``use_all``.
    devices: default ``jax.devices()``.
    dcn: slices per axis over the data-center network; -1 takes the rest of
      the slices (default: every slice on ``data``, so only the data-parallel
      gradient reduction crosses slices). Axis i of the mesh has
      ``shape[i] * dcn[i]`` devices.
    slice_of: ``device -> slice key`` (``samjax.mesh_devices.device_slices``;
      default: ``slice_index`` on TPU multi-slice; the process where ``dcn``
      places several slices explicitly (no -1), as on GPU hosts).
    use_all: every device must be in the mesh (a plan for a pod).
    log: gets one line saying how the devices were ordered.
  """
  devices = list(jax.devices() if devices is None else devices)
  # Devices without a slice_index (GPU, CPU) form slices by process only when
  # the config places slices explicitly: one process per GPU on one host
  # must not turn FSDP into pure data parallelism by default.
  explicit = -1 not in tuple(dcn) and math.prod(dcn) > 1
  slices = mesh_devices.device_slices(devices, slice_of, by_process=explicit)
  dcn = resolve_dcn_shape(dcn, len(slices))
  if len(slices) == 1:
    shape = resolve_mesh_shape(shape, len(devices), use_all=use_all)
    arr, how = mesh_devices.slice_mesh(shape, devices[:math.prod(shape)])
  else:
    sizes = sorted({len(s) for s in slices})
    if len(sizes) > 1:
      raise ValueError(f"slices of unequal sizes {sizes}: a hybrid mesh needs equal slices")
    ici = resolve_mesh_shape(shape, sizes[0], use_all=True)
    arr, how = mesh_devices.hybrid_mesh(ici, dcn, slices)
    how = f"{len(slices)} slices over DCN as (data, fsdp, model) = {dcn}; each slice {how}"
  if log is not None:
    log(f"[mesh] (data, fsdp, model) = {arr.shape}: {how}")
  # Explicit Auto axes: jax 0.10 defaults to Explicit, which Linen code rejects.
  return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def param_shardings(model, mesh: Mesh, rules):
  """NamedSharding per param from the model's logical axis names.

  A dim whose size the mapped mesh axes do not divide (e.g. the decoder's
  32-channel upscaling conv on 64 chips) is replicated instead: jax cannot
  lower an uneven split, and such leaves are a few KiB.
  """
  shardings = nn.logical_to_mesh_sharding(model.logical_axes(), mesh, rules)
  return jax.tree_util.tree_map(lambda sh, leaf: _divisible(sh, leaf.shape, mesh),
                                shardings, model.param_shapes())


def _divisible(sharding: NamedSharding, shape, mesh: Mesh) -> NamedSharding:
  spec = []
  for i, axes in enumerate(tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    spec.append(axes if size == 1 or shape[i] % size == 0 else None)
  return NamedSharding(mesh, PartitionSpec(*spec[:len(sharding.spec)]))


def _path_names(path) -> tuple:
  return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p))))
               for p in path)


def state_shardings(abstract_state, params_sharding, mesh: Mesh):
  """Shardings for a train state: every leaf whose path ends in a param path
  (params, Adam moments, ...) gets that param's sharding; the rest is
  replicated."""
  by_path = {}
  for path, sh in jax.tree_util.tree_flatten_with_path(params_sharding)[0]:
    by_path[_path_names(path)] = sh
  replicated = NamedSharding(mesh, PartitionSpec())

  def pick(path, leaf):
    names = _path_names(path)
    for i, n in enumerate(names):
      if n in TOP_LEVEL:
        sh = by_path.get(names[i:])
        if sh is not None and len(sh.spec) <= len(getattr(leaf, "shape", ())):
          return sh
        break
    return replicated
  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def batch_sharding(mesh: Mesh, batch_axes=("data", "fsdp")) -> NamedSharding:
  """NamedSharding splitting dim 0 over ``batch_axes``, replicated over the rest.

  The one definition for the train step and ``data_pipelines.global_batch``
  (which passes its own ``("data",)`` default explicitly).
  """
  axes = tuple(batch_axes)
  missing = [a for a in axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(f"batch axes {missing} are not mesh axes {mesh.axis_names}")
  return NamedSharding(mesh, PartitionSpec(axes))


def batch_shard_count(mesh: Mesh, batch_axes=("data", "fsdp")) -> int:
  """How many shards ``batch_sharding(mesh, batch_axes)`` splits a batch into."""
  return int(math.prod(mesh.shape[a] for a in batch_sharding(mesh, batch_axes).spec[0]))


def replicated_large_leaves(abstract_state, shardings, mesh: Mesh, min_bytes: int
                            ) -> list[str]:
  """Paths of leaves over ``min_bytes`` that are fully replicated although the
  mesh has devices to split them over (``fsdp`` or ``model`` > 1)."""
  if not min_bytes or mesh.shape["fsdp"] * mesh.shape["model"] == 1:
    return []
  bad = []
  flat_shardings = jax.tree_util.tree_leaves(shardings)
  flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  for (path, leaf), sharding in zip(flat, flat_shardings):
    nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    if nbytes > min_bytes and sharding.is_fully_replicated:
      bad.append(f"{'/'.join(_path_names(path))} {tuple(leaf.shape)} "
                 f"({nbytes / 2**20:.1f} MiB)")
  return bad

"""Which device sits where in the (data, fsdp, model) mesh.

Two levels, as a pod is wired:

* **Inside a slice** (ICI): on TPUs the chips form a 2D/3D torus, and which
  chips are neighbours is decided by their physical coordinates, not their
  index. ``jax.experimental.mesh_utils.create_device_mesh`` maps the mesh
  axes onto physical rings, so an FSDP all-gather runs along a ring instead
  of across the torus. Devices without physical coordinates (CPU) keep their
  index order.
* **Across slices** (DCN, the data-center network, far slower than ICI): a
  multi-slice job's devices come in groups ("granules"): TPU slices
  (``device.slice_index``), or, when a config places slices explicitly,
  processes (one GPU host per process). The hybrid mesh repeats one per-slice mesh along the ``dcn``
  axis counts, as ``mesh_utils.create_hybrid_device_mesh`` does, so that
  only the collectives of the axes given DCN slices (by default ``data``:
  the gradient all-reduce) cross the slow network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

PHYSICAL = "physical (mesh_utils.create_device_mesh)"


def device_slices(devices: Sequence, slice_of: Callable | None = None,
                  by_process: bool = False) -> list[list]:
  """The devices grouped by slice, groups sorted by slice key, each in the
  given order.

  ``slice_of(device) -> key`` decides; by default a device's ``slice_index``
  where the devices have one (TPU multi-slice), else its process if
  ``by_process`` (hosts joined by a slower network: GPU nodes, as jax's
  ``process_is_granule``), else one group.
  """
  if slice_of is None:
    if any(getattr(d, "slice_index", None) is not None for d in devices):
      slice_of = lambda d: getattr(d, "slice_index", 0) or 0
    elif by_process:
      slice_of = lambda d: d.process_index
    else:
      slice_of = lambda d: 0
  groups: dict = {}
  for d in devices:
    groups.setdefault(slice_of(d), []).append(d)
  return [groups[k] for k in sorted(groups)]


def slice_mesh(shape: Sequence[int], devices: Sequence) -> tuple[np.ndarray, str]:
  """``devices`` (one slice) laid out as ``shape`` and how: physical rings
  where the devices have coordinates, else index order (said in the note)."""
  from jax.experimental import mesh_utils

  shape = tuple(int(s) for s in shape)
  platform = devices[0].platform
  if platform == "cpu":
    return np.asarray(devices).reshape(shape), "index order (CPU devices have no topology)"
  errors = []
  for split in (False, True):  # a split physical axis is still ring-aware in part
    try:
      arr = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=split)
      return arr, PHYSICAL + (" with a split physical axis" if split else "")
    except (ValueError, NotImplementedError, AssertionError) as e:
      errors.append(str(e).splitlines()[0][:160])
  # e.g. v4's two devices per chip: create_device_mesh wants one per chip.
  return (np.asarray(devices).reshape(shape),
          f"index order (create_device_mesh cannot lay out {shape}: {errors[-1]})")


def hybrid_mesh(ici_shape: Sequence[int], dcn_shape: Sequence[int],
                slices: list[list]) -> tuple[np.ndarray, str]:
  """Per-slice meshes of ``ici_shape`` tiled along ``dcn_shape``: mesh axis
  i has ``ici_shape[i] * dcn_shape[i]`` devices, slice-major (the layout of
  ``mesh_utils.create_hybrid_device_mesh``)."""
  if len(slices) != math.prod(dcn_shape):
    raise ValueError(f"mesh.dcn {tuple(dcn_shape)} places {math.prod(dcn_shape)} slices; "
                     f"the devices form {len(slices)}")
  per_slice = [slice_mesh(ici_shape, s) for s in slices]
  order = np.empty(len(slices), dtype=object)
  order[:] = [m for m, _ in per_slice]
  blocks = order.reshape(tuple(dcn_shape))
  return np.block(blocks.tolist()), per_slice[0][1]

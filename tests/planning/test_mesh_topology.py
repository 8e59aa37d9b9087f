"""Meshes laid out as the chips are wired: the default mesh on AOT TPU
topologies equals jax's topology-aware layout, slices stack along the DCN
axes, and what crosses slices is read off the compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec

from samjax.mesh import make_mesh, resolve_dcn_shape
from samjax.planning import chips, dcn
from samjax.planning.devices import tpu_devices


@pytest.fixture(scope="module")
def v5p_128():
  pytest.importorskip("libtpu", reason="TPU topologies need libtpu (the plan extra)")
  return tpu_devices(chips.parse_topology("v5p-128"))


@pytest.fixture(scope="module")
def two_v5p_64():
  pytest.importorskip("libtpu", reason="TPU topologies need libtpu (the plan extra)")
  return tpu_devices(chips.parse_topology("v5p-64"), num_slices=2)


def _ids(arr) -> np.ndarray:
  return np.vectorize(lambda d: d.id)(arr)


@pytest.mark.parametrize("shape", [(1, 64, 1), (4, 16, 1), (1, 16, 4), (2, 32, 1)])
def test_default_mesh_is_the_topology_aware_one(v5p_128, shape):
  logged = []
  mesh = make_mesh((shape[0], -1, shape[2]), v5p_128, log=logged.append)
  expected = mesh_utils.create_device_mesh(
      shape, v5p_128, allow_split_physical_axes=shape == (2, 32, 1))
  np.testing.assert_array_equal(_ids(mesh.devices), _ids(expected))
  assert "physical" in logged[0]
  # Not the index order: the plain reshape would put an FSDP ring across the torus.
  assert not np.array_equal(_ids(mesh.devices), _ids(np.asarray(v5p_128).reshape(shape)))


def test_two_slices_stack_on_data_as_jax_hybrid_mesh(two_v5p_64):
  mesh = make_mesh((1, -1, 1), two_v5p_64)  # default dcn: every slice on data
  expected = mesh_utils.create_hybrid_device_mesh((1, 32, 1), (2, 1, 1), two_v5p_64)
  np.testing.assert_array_equal(_ids(mesh.devices), _ids(expected))
  slices = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 32, "model": 1}
  assert (slices[0] == 0).all() and (slices[1] == 1).all()  # one slice per data row


def test_dcn_shape_errors(two_v5p_64):
  assert resolve_dcn_shape((-1, 1, 1), 4) == (4, 1, 1)
  assert resolve_dcn_shape((2, -1, 1), 4) == (2, 2, 1)
  with pytest.raises(ValueError, match="places 3 slices; the devices form 2"):
    make_mesh((1, -1, 1), two_v5p_64, dcn=(3, 1, 1))
  with pytest.raises(ValueError, match="must be 3 positive"):
    resolve_dcn_shape((0, 1, 1), 2)
  # One process's CPU devices are one slice: two named slices cannot be.
  with pytest.raises(ValueError, match="places 2 slices; the devices form 1"):
    make_mesh((1, -1, 1), jax.devices()[:8], dcn=(2, 1, 1))


def test_fake_cpu_slices_put_data_parallelism_on_the_slice_axis():
  devices = jax.devices()[:8]
  mesh = make_mesh((1, -1, 1), devices, dcn=(2, 1, 1), slice_of=lambda d: d.id % 2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "model": 1}
  np.testing.assert_array_equal(_ids(mesh.devices)[..., 0], [[0, 2, 4, 6], [1, 3, 5, 7]])
  # One slice and one process on CPU: the plain index order, said so.
  logged = []
  plain = make_mesh((2, 4, 1), devices, log=logged.append)
  np.testing.assert_array_equal(_ids(plain.devices).ravel(), range(8))
  assert "index order" in logged[0]


def test_dcn_transfers_list_only_the_cross_slice_reduction():
  """A data-parallel gradient on 2 slices of v5p:2x2x1: the FSDP gather and
  reduce-scatter stay in a slice; only the reduction over data crosses, with
  the bytes of each chip's gradient shard."""
  pytest.importorskip("libtpu", reason="TPU topologies need libtpu (the plan extra)")
  mesh = make_mesh((1, -1, 1), tpu_devices(chips.parse_topology("v5p:2x2x1"), num_slices=2))
  w_sharding = NamedSharding(mesh, PartitionSpec("fsdp", None))
  w = jax.ShapeDtypeStruct((1024, 256), jnp.float32, sharding=w_sharding)
  x = jax.ShapeDtypeStruct((16, 1024), jnp.float32,
                           sharding=NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
  grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2)),
                 out_shardings=w_sharding)
  transfers = dcn.dcn_transfers(grad.lower(w, x).compile().as_text())
  assert [t.kind for t in transfers] == ["ALL_REDUCE"]
  assert transfers[0].count == 1 and transfers[0].bytes == 1024 * 256 * 4 // 4
  one_slice = make_mesh((1, -1, 1), tpu_devices(chips.parse_topology("v5p:2x2x1")))
  w1 = jax.ShapeDtypeStruct(w.shape, w.dtype,
                            sharding=NamedSharding(one_slice, PartitionSpec("fsdp", None)))
  x1 = jax.ShapeDtypeStruct(x.shape, x.dtype,
                            sharding=NamedSharding(one_slice, PartitionSpec(("data", "fsdp"))))
  grad1 = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2)),
                  out_shardings=w1.sharding)
  assert dcn.dcn_transfers(grad1.lower(w1, x1).compile().as_text()) == []


MEGASCALE = ('frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",'
             "_xla_megascale_transfer_type=")


def test_transfers_in_a_loop_count_once_per_trip():
  """A known trip count (12), and a TPU-style peeled loop without one:
  ``counter < 7`` from an initial 1 (through a copy) runs 6 times, nested
  in the first: 72."""
  hlo = """\
%inner (p: f32[8]) -> f32[8] {
  %send = (f32[8]{0}, u32[], token[]) send(%p, %t), MEGASCALE"ALL_REDUCE"}
}
%inner_cond (p: (s32[], f32[8])) -> pred[] {
  %constant.1 = s32[]{:T(128)} constant(7)
  %gte = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%gte, %constant.1), direction=LT
}
%body (p: f32[8]) -> f32[8] {
  %one = s32[]{:T(128)} constant(1)
  %copy.3 = s32[]{:T(128)} copy(%one)
  %tuple.5 = (s32[], f32[8]) tuple(%copy.3, %p)
  %w2 = (s32[], f32[8]) while(%tuple.5), condition=%inner_cond, body=%inner
}
%cond (p: f32[8]) -> pred[] {
  %c = pred[] constant(true)
}
ENTRY %main (a: f32[8]) -> f32[8] {
  %w = f32[8] while(%a), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  %send.2 = (bf16[4,2]{1,0}, u32[], token[]) send(%a, %t), MEGASCALE"ALL_GATHER"}
}
""".replace("MEGASCALE", MEGASCALE)
  got = {t.kind: (t.count, t.bytes, t.largest) for t in dcn.dcn_transfers(hlo)}
  assert got == {"ALL_REDUCE": (72, 72 * 32, "f32[8]"), "ALL_GATHER": (1, 16, "bf16[4,2]")}


def test_cluster_launchers_start_distributed_jax(monkeypatch):
  """Without JAX_COORDINATOR_ADDRESS, a TPU VM or a SLURM / Open MPI launch
  of several tasks still starts jax.distributed; one task does not."""
  from samjax import mesh
  monkeypatch.setattr(mesh, "tpu_present", lambda: False)
  for name in ("SLURM_NTASKS", "SLURM_NPROCS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(name, raising=False)
  assert not mesh._cluster_launch()
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not mesh._cluster_launch()
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert mesh._cluster_launch()
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
  assert mesh._cluster_launch()
  monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
  monkeypatch.setattr(mesh, "tpu_present", lambda: True)
  assert mesh._cluster_launch()


class _FakeGpu:
  """A device of a multi-process GPU job, enough for the slice grouping."""
  platform = "gpu"

  def __init__(self, i, process):
    self.id, self.process_index = i, process


def test_processes_become_slices_only_when_dcn_names_them():
  from samjax import mesh_devices
  gpus = [_FakeGpu(i, i // 4) for i in range(8)]  # 2 hosts x 4 GPUs
  assert len(mesh_devices.device_slices(gpus)) == 1  # default: one mesh over all
  by_host = mesh_devices.device_slices(gpus, by_process=True)
  assert [[d.id for d in s] for s in by_host] == [[0, 1, 2, 3], [4, 5, 6, 7]]

"""`samjax plan`: a tiny train step compiled for a TPU topology on the CPU, the
scan-aware FLOP counter against XLA's cost analysis, topology names and the
CLI's errors.

One plan (session fixture: two slices of v5p:2x2x1, so the multi-slice path
with its one-slice step-time compile; well under a minute on 2 cores) serves
every report assertion; the rest traces or compiles small functions.
"""

import contextlib
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import pytest

from samjax.cli import main
from samjax.mesh import resolve_mesh_shape
from samjax.planning import chips, flops
from samjax.planning.hbm_errors import parse_hbm_oom
from samjax.planning.report import parse_mesh
from tests.shared_fixtures import build_once

# The plan fixture's tests on one worker: another would wait idle while the
# first builds it (build_once).
pytestmark = pytest.mark.xdist_group("plan")

# vit_tiny cut down for a fast TPU compile: 64 px, 2 encoder blocks, one
# decoder layer, one decoder pass (no follow-up scan), batch 8 x 2 masks.
TINY = ["--config", "tiny_demo",
        "--config.model.overrides={'image_size': 64, 'encoder_depth': 2, "
        "'encoder_global_attn_indexes': (1,), 'decoder_depth': 1}",
        "--config.data.batch_size=8", "--config.data.max_masks=2",
        "--config.sim.num_point_iters=0", "--config.sim.num_mask_only_iters=0"]


def _run_cli(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = main(argv)
  return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def tiny_plan(tmp_path_factory):
  """(exit code, stdout, report dict) of one compiled plan on two slices of v5p:2x2x1."""
  pytest.importorskip("libtpu", reason="planning for TPU needs libtpu (the plan extra)")

  def build(folder):
    path = os.path.join(folder, "plan.json")
    rc, out, _ = _run_cli(["plan", *TINY, "--topology", "v5p:2x2x1", "--num-slices", "2",
                           "--mesh", "1,-1,1", "--json", path])
    with open(path) as f:
      return [rc, out, json.load(f)]
  return build_once(tmp_path_factory, "tiny_plan", build)


def test_plan_memory_report(tiny_plan):
  rc, _, r = tiny_plan
  assert rc == 0
  assert r["compiled"] and r["num_chips"] == 8 and r["mesh_shape"] == [2, 4, 1]
  assert r["num_slices"] == 2 and r["dcn_shape"] == [2, 1, 1]  # slices on data
  assert r["model"]["attention_impl"] == "xla"  # auto resolved for the TPU, not the host
  for k in ("param_bytes", "opt_state_bytes", "batch_bytes", "xla_argument_bytes",
            "xla_output_bytes", "xla_temp_bytes", "peak_bytes"):
    assert r[k] > 0, k
  # FSDP over the 4 chips of a slice: each holds a quarter of the sharded
  # leaves, all of the replicated ones (norms, small tensors).
  total = r["param_bytes_total"]
  assert total / 4 <= r["param_bytes"] < total / 2
  # Adam keeps two moments per parameter, sharded like it.
  assert r["opt_state_bytes"] == pytest.approx(2 * r["param_bytes"], rel=0.01)
  # Batch: 8 images x 64x64x3 uint8 + masks + prompts, split over 8 chips.
  assert r["batch_bytes"] == pytest.approx(
      (8 * 64 * 64 * 3 + 8 * 2 * 16 * 16 + 8 * 2 * 4 * 4 + 8 * 2 + 8 * 2 * 4) / 8, rel=0.01)
  # XLA's arguments are this state + batch (TPU tiles pad small arrays).
  static = r["param_bytes"] + r["opt_state_bytes"] + r["batch_bytes"] + r["other_state_bytes"]
  assert static <= r["xla_argument_bytes"] < 3 * static
  # The donated state comes back in place.
  assert r["xla_alias_bytes"] > 0.9 * (r["param_bytes"] + r["opt_state_bytes"])
  assert r["fits"] is True and 0 < r["headroom_bytes"] < r["hbm_bytes"]
  assert r["hbm_bytes"] == chips.CHIPS["v5p"].hbm_bytes


def test_plan_flops_and_time(tiny_plan):
  _, _, r = tiny_plan
  assert r["model_flops"] > 0 and r["program_flops"] == r["model_flops"]  # no remat
  assert r["flops_exact"]
  assert r["model_flops_per_chip"] == pytest.approx(r["model_flops"] / 8)
  # XLA counts elementwise ops too; with no loop in this program its count is
  # of the same size as the matmul count.
  assert 0.5 < r["xla_flops_per_chip"] / r["model_flops_per_chip"] < 3
  # The cost model prices no cross-slice program: the time is one slice's
  # step on half the batch, priced by the cost model.
  assert r["xla_optimal_seconds"] is None and r["step_time_s"] > 0
  assert r["step_time_source"].startswith("one slice's step on 1/2 of the batch (XLA TPU")
  assert 0 < r["mfu"] <= 1
  assert r["images_per_s_per_chip"] == pytest.approx(8 / r["step_time_s"] / 8)
  assert r["compile_s"] > 0 and r["lower_s"] > 0


def test_plan_reports_the_cross_slice_traffic(tiny_plan):
  """Only the data-parallel reduction crosses the slices; each chip sends
  about its FSDP shard of the gradient (TPU tiles pad the small leaves)."""
  _, out, r = tiny_plan
  assert [t["kind"] for t in r["dcn_transfers"]] == ["ALL_REDUCE"]
  sent = r["dcn_transfers"][0]["bytes"]
  assert r["param_bytes"] <= sent < 4 * r["param_bytes"]
  line = next(x for x in out.splitlines() if "DCN traffic / chip / step" in x)
  assert "ALL_REDUCE" in line and "x," in line


def test_plan_cli_prints_table(tiny_plan):
  _, out, _ = tiny_plan
  for label in ("peak HBM / chip", "fits", "model FLOPs / step", "step time",
                "MFU (model) / HFU", "compiling", "compiled in", "slices (DCN)",
                "DCN traffic / chip / step", "physical (mesh_utils.create_device_mesh)"):
    assert label in out, label
  assert "yes," in out


def test_gpu_plan_reports_what_it_can(tmp_path):
  """No GPU compiler here: bytes and FLOPs, the limitation printed, exit 0."""
  path = tmp_path / "gpu.json"
  rc, out, err = _run_cli(["plan", *TINY, "--gpu", "2", "--gpu-kind", "h100",
                           "--json", str(path)])
  assert rc == 0, err
  r = json.loads(path.read_text())
  assert r["platform"] == "gpu" and r["num_chips"] == 2 and not r["compiled"]
  assert r["param_bytes"] > 0 and r["model_flops"] > 0
  assert r["limitations"] and "not reported" in out
  assert r["step_time_s"] == pytest.approx(r["program_flops"] / 2 / chips.CHIPS["h100"]
                                           .peak_bf16_flops)


def test_bad_topology_is_one_line_error():
  rc, _, err = _run_cli(["plan", *TINY, "--topology", "v9x:2x2"])
  assert rc == 1 and "Traceback" not in err
  assert err.strip().count("\n") == 0 and "unknown TPU kind" in err
  rc, _, err = _run_cli(["plan", *TINY, "--topology", "v5p-6"])
  assert rc == 1 and err.strip().count("\n") == 0 and "standard" in err


def test_missing_libtpu_is_one_line_error(monkeypatch):
  from samjax.planning import devices
  monkeypatch.setattr(devices, "libtpu_available", lambda: False)
  rc, _, err = _run_cli(["plan", *TINY, "--topology", "v5p:2x2x1"])
  assert rc == 1 and err.strip().count("\n") == 0 and "pip install" in err


def test_bad_mesh_is_one_line_error():
  rc, _, err = _run_cli(["plan", *TINY, "--topology", "v5p:2x2x1", "--mesh", "1,2"])
  assert rc == 1 and err.strip().count("\n") == 0 and "--mesh" in err
  assert parse_mesh("2,-1,1") == (2, -1, 1)


def test_mesh_shape_resolution_one_owner():
  """The -1 and device-count rules ``make_mesh`` and the planner share:
  a run may use fewer devices than the host has, a plan must cover all."""
  assert resolve_mesh_shape((2, -1, 1), 8) == (2, 4, 1)
  assert resolve_mesh_shape((1, 1, 1), 8) == (1, 1, 1)
  with pytest.raises(ValueError, match="needs 1 devices, 8 available"):
    resolve_mesh_shape((1, 1, 1), 8, use_all=True)
  with pytest.raises(ValueError, match="does not divide 8"):
    resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ValueError, match="needs 16 devices"):
    resolve_mesh_shape((2, 2, 4), 8)
  with pytest.raises(ValueError, match="at most one -1"):
    resolve_mesh_shape((-1, -1, 1), 8)


def test_batch_or_mesh_that_does_not_fit_the_target_is_one_line_error():
  """Refused before tracing: a batch the batch axes cannot split (checked
  once, by build_program) and a mesh smaller than the topology."""
  pytest.importorskip("libtpu", reason="planning for TPU needs libtpu (the plan extra)")
  rc, _, err = _run_cli(["plan", *TINY, "--config.data.batch_size=6",
                         "--topology", "v5p:2x2x1", "--mesh", "1,-1,1"])
  assert rc == 1 and err.strip().count("\n") == 0, err
  assert "global batch 6 does not split over 4 batch shards of batch axes" in err
  assert "'fsdp': 4" in err  # names the mesh it tried
  rc, _, err = _run_cli(["plan", *TINY, "--topology", "v5p:2x2x1", "--mesh", "1,2,1"])
  assert rc == 1 and err.strip().count("\n") == 0 and "needs 2 devices" in err, err


@pytest.mark.parametrize("name, kind, shape, num_chips, cloud", [
    ("v5p-128", "v5p", (4, 4, 4), 64, "v5p-128"),       # TensorCores: 2 per chip
    ("v5p:4x4x8", "v5p", (4, 4, 8), 128, "v5p-256"),
    ("v5e-256", "v5e", (16, 16), 256, "v5e-256"),        # chips
    ("v5litepod-16", "v5e", (4, 4), 16, "v5e-16"),
    ("v6e:16x16", "v6e", (16, 16), 256, "v6e-256"),
    ("v4-32", "v4", (2, 2, 4), 16, "v4-32"),
])
def test_topology_names(name, kind, shape, num_chips, cloud):
  topo = chips.parse_topology(name)
  assert (topo.chip.name, topo.shape, topo.num_chips, topo.cloud_name) == (
      kind, shape, num_chips, cloud)


def test_chip_table_has_sources():
  for c in chips.CHIPS.values():
    assert c.hbm_bytes > 8 * 2 ** 30 and c.peak_bf16_flops > 1e14 and c.source


def test_parse_hbm_oom():
  kind, need, cap = parse_hbm_oom(
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
      "HLO temporaries (291.73G) exceeds available HBM (95.74G).")
  assert kind == "temp" and need == int(291.73 * 2 ** 30) and cap == int(95.74 * 2 ** 30)
  assert parse_hbm_oom("some other error") is None


def _xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def test_flops_match_xla_without_loops():
  """Matmuls and an unpadded conv, forward and backward: XLA's count (which
  adds elementwise ops) within 5% of the matmul count."""
  x, w1, w2 = jnp.ones((16, 64)), jnp.ones((64, 128)), jnp.ones((128, 32))
  img, k = jnp.ones((2, 32, 32, 3)), jnp.ones((4, 4, 3, 16))

  def f(x, w1, w2, img, k):
    y = jax.lax.conv_general_dilated(img, k, (4, 4), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Squares: a plain sum's all-ones cotangent lets XLA fold matmuls away.
    return ((jnp.tanh(x @ w1) @ w2) ** 2).sum() + (y ** 2).sum()

  counted = flops.count_flops(f, x, w1, w2, img, k)
  conv = 2 * (2 * 8 * 8 * 16) * (4 * 4 * 3)
  assert counted.total == 2 * 16 * 64 * 128 + 2 * 16 * 128 * 32 + conv
  assert counted.by_primitive["conv_general_dilated"] == conv
  assert counted.total == pytest.approx(_xla_flops(f, x, w1, w2, img, k), rel=0.05)
  # Every input differentiated: XLA drops forward work no gradient needs,
  # the jaxpr keeps it.
  g = jax.grad(f, argnums=(0, 1, 2, 3, 4))
  assert flops.count_flops(g, x, w1, w2, img, k).total == pytest.approx(
      _xla_flops(g, x, w1, w2, img, k), rel=0.05)


def test_flops_multiply_scan_bodies():
  """lax.scan of length 5: the counter gives 5x the body; XLA counts it once."""
  x, w = jnp.ones((8, 32)), jnp.ones((32, 32))

  def f(x, w):
    def body(c, _):
      return jnp.tanh(c @ w), None
    return jax.lax.scan(body, x, None, length=5)[0].sum()

  body = 2 * 8 * 32 * 32
  counted = flops.count_flops(f, x, w)
  assert counted.total == 5 * body and counted.exact
  assert flops.count_flops(f, x, w, scan_lengths=False).total == body
  assert _xla_flops(f, x, w) < 2 * body
  # Backward too: the transposed scan is another scan of 5 (2 matmuls a step).
  g = jax.grad(f, argnums=1)
  assert flops.count_flops(g, x, w).total == 5 * body + 5 * 2 * body


def test_flops_remat_and_while():
  x, w = jnp.ones((8, 32)), jnp.ones((32, 32))
  mm = 2 * 8 * 32 * 32
  f = jax.checkpoint(lambda x, w: jnp.tanh(x @ w) @ w)
  g = jax.grad(lambda x, w: f(x, w).sum(), argnums=1)
  # 2 forward + 1 recomputed + 3 backward matmuls (the last output's grad
  # w.r.t. the first matmul's input is not needed: w only).
  count = flops.count_flops(g, x, w)
  assert count.total == pytest.approx(6 * mm) and count.exact

  def loop(x, w):
    return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1), (x, 0))[0]
  count = flops.count_flops(loop, x, w)
  assert count.while_loops == 1 and not count.exact and count.total == mm
  assert math.isclose(count.to_dict()["total"], mm)


def test_tpu_cost_model_counts_scan_bodies_once():
  """Why `plan` scales optimal_seconds by the counted/once FLOP ratio: the TPU
  cost model charges a scan body once, like its FLOP count."""
  pytest.importorskip("libtpu", reason="planning for TPU needs libtpu (the plan extra)")
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from samjax.planning.devices import tpu_devices
  mesh = Mesh(np.array(tpu_devices(chips.parse_topology("v5p:2x2x1"))), ("x",))
  x = jax.ShapeDtypeStruct((2048, 2048), jnp.bfloat16,
                           sharding=NamedSharding(mesh, PartitionSpec("x")))
  w = jax.ShapeDtypeStruct((2048, 2048), jnp.bfloat16,
                           sharding=NamedSharding(mesh, PartitionSpec()))

  def cost(fn):
    c = jax.jit(fn).lower(x, w).compile().cost_analysis()
    return c[0] if isinstance(c, (list, tuple)) else c

  def scanned(n):
    return lambda x, w: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None,
                                     length=n)[0]

  def unrolled(x, w):
    for _ in range(8):
      x = jnp.tanh(x @ w)
    return x

  one, eight, flat = cost(scanned(1)), cost(scanned(8)), cost(unrolled)
  assert eight["flops"] == one["flops"]
  assert eight["optimal_seconds"] < 1.5 * one["optimal_seconds"]
  assert flat["flops"] == pytest.approx(8 * one["flops"], rel=0.01)
  assert flat["optimal_seconds"] > 4 * eight["optimal_seconds"]


def test_microbatched_plan_counts_the_same_flops():
  """``config.microbatches=0`` on 2 GPUs with 2 images each: 2 microbatches
  in a scan; the scan-aware FLOP count and the batch line see the same step."""
  from samjax.configs import load_config
  from samjax.planning import planner

  reports = {}
  for m in (1, 0):
    config = load_config("tiny_demo", [*TINY[2:], "--config.data.batch_size=4",
                                       f"--config.microbatches={m}"])
    reports[m] = planner.plan(config, gpu=2, mesh_shape=(1, -1, 1), compile=False, log=None)
  assert reports[0].model["microbatches"] == 2 and reports[1].model["microbatches"] == 1
  # Equal up to the microbatch bookkeeping (~4k of 179M FLOPs); without the
  # trip count the microbatched step would count half.
  assert reports[0].model_flops == pytest.approx(reports[1].model_flops, rel=1e-4)
  assert reports[0].program_flops_scan_once < reports[1].program_flops_scan_once
  assert "2 sequential microbatches of 2 images" in reports[0].table()

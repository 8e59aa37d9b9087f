"""The same train step on 1 device and on 2x4 (data x fsdp) meshes of fake CPU
devices: the plain layout and two fake slices on the hybrid mesh."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.logical_axes import DEFAULT_LOGICAL_RULES
from samjax.mesh import batch_sharding, make_mesh, param_shardings, state_shardings
from samjax.train.interactive import InteractiveConfig
from samjax.train.optimizer import make_optimizer
from samjax.train.step import make_train_step
from tests.synthetic_data import synthetic_batch


def _batch(b=8, k=3, s=128, g=32, seed=0):
  return synthetic_batch(b, k, s, g, seed)


def _run(mesh, model, tx, state0, batch, sim=None, prompt_chunk=None):
  sim = sim or InteractiveConfig(num_point_iters=1, num_mask_only_iters=0)
  abstract = jax.eval_shape(lambda: state0)
  sh = state_shardings(abstract, param_shardings(model, mesh, DEFAULT_LOGICAL_RULES), mesh)
  bsh = batch_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_LOGICAL_RULES):
    step = jax.jit(make_train_step(model, tx, sim, prompt_chunk), in_shardings=(sh, bsh),
                   out_shardings=(sh, None))
    state = jax.device_put(state0, sh)
    new_state, metrics = step(state, jax.device_put(batch, bsh))
  return jax.device_get(new_state), jax.device_get(metrics), sh


def _assert_same_step(s1, m1, s8, m8):
  """Two steps' loss, gradient norm and updated params agree."""
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-4)
  np.testing.assert_allclose(m1["grad_norm"], m8["grad_norm"], rtol=1e-3)
  # Adam's first step is ~lr * sign(g) where |g| >> eps, but ~lr * g / eps for
  # near-zero gradients, where a different reduction order (sharded sums) shows
  # up: every element must agree to 10% of lr, nearly all to float noise.
  diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
      jax.tree_util.tree_leaves(s1["params"]), jax.tree_util.tree_leaves(s8["params"]))])
  assert diffs.max() < 1e-4
  assert (diffs < 2e-6).mean() > 0.99


@pytest.fixture(scope="module")
def one_device_step():
  """The model, first state, batch and one plain step's result on one device."""
  # vit_tiny cut down (2 encoder blocks, one decoder layer): every kind of
  # layer is still sharded, and the compiles take half the time.
  model = build("vit_tiny", image_size=128, encoder_depth=2, encoder_global_attn_indexes=(1,),
                decoder_depth=1)
  params = model.init(jax.random.PRNGKey(0))
  tx, _ = make_optimizer(params, model.config, lr=1e-3, warmup_steps=1)
  state0 = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
            "rng": jax.random.PRNGKey(3)}
  batch = _batch()
  s1, m1, _ = _run(make_mesh((1, 1, 1)), model, tx, state0, batch)
  return model, tx, params, state0, batch, s1, m1


def test_one_device_and_a_2x4_mesh_of_two_slices_agree(one_device_step):
  """The 2x4 (data x fsdp) mesh as two "slices" of 4 CPU devices on the
  hybrid mesh (interleaved ids, so not the plain index layout): data
  parallelism spans the slices, FSDP stays inside each; the step equals the
  1-device step and FSDP sharding was in effect. (The plain 2x4 layout is
  the eager-gradient test's below.)"""
  model, tx, params, state0, batch, s1, m1 = one_device_step
  mesh = make_mesh((1, -1, 1), jax.devices()[:8], dcn=(2, 1, 1), slice_of=lambda d: d.id % 2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "model": 1}
  assert [{d.id % 2 for d in row.ravel()} for row in mesh.devices] == [{0}, {1}]
  s8, m8, sh8 = _run(mesh, model, tx, state0, batch)
  _assert_same_step(s1, m1, s8, m8)
  # The update really moved the params, and FSDP sharding was in effect.
  moved = [float(np.abs(a - b).max()) for a, b in zip(
      jax.tree_util.tree_leaves(s1["params"]), jax.tree_util.tree_leaves(params))]
  assert max(moved) > 1e-4
  qkv = sh8["params"]["image_encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert qkv.spec[0] == "fsdp"
  adam = next(x for x in sh8["opt_state"] if hasattr(x, "mu"))
  mu = adam.mu["image_encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert mu.spec[0] == "fsdp"  # Adam moments follow their params


def test_installed_libtpu_without_a_tpu_is_not_an_accelerator(monkeypatch):
  """``make install`` adds libtpu for ``samjax plan``; a CPU-only multi-process
  run must still pick CPU collectives (gloo), so libtpu alone is no TPU."""
  import glob
  import importlib.util

  from samjax import hardware
  if importlib.util.find_spec("libtpu") is None:
    pytest.skip("libtpu is not installed (the plan extra)")
  assert not glob.glob("/dev/accel*") and not glob.glob("/dev/nvidia[0-9]*")
  assert hardware.has_accelerator() is False
  # And the device nodes do count when they are there.
  real_glob = glob.glob
  monkeypatch.setattr(glob, "glob", lambda p: ["/dev/accel0"] if p == "/dev/accel*"
                      else real_glob(p))
  assert hardware.has_accelerator() is True


def test_eager_chunk_grads_on_a_2x4_mesh_match_the_plain_step(one_device_step):
  """``sim.eager_chunk_grads`` (one mask per chunk) inside the FSDP-sharded
  step: the same loss, gradient norm and update as the plain one-device step."""
  model, tx, _, state0, batch, s1, m1 = one_device_step
  eager = InteractiveConfig(num_point_iters=1, num_mask_only_iters=0, eager_chunk_grads=True)
  s8, m8, _ = _run(make_mesh((2, 4, 1)), model, tx, state0, batch, eager, prompt_chunk=1)
  _assert_same_step(s1, m1, s8, m8)

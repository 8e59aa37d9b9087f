"""Gradient accumulation (``config.microbatches``): the same step as one batch.

The simulation is made deterministic (box first prompts without noise, no
follow-up passes, no drop path) so that a step's randomness, which differs
per microbatch, cannot matter: the microbatched step must then give the full
batch's loss, gradient and update.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samjax import build
from samjax.configs import load_config
from samjax.logical_axes import DEFAULT_LOGICAL_RULES
from samjax.mesh import batch_sharding, make_mesh, param_shardings, state_shardings
from samjax.train.interactive import InteractiveConfig
from samjax.train.microbatch import (
  accumulate_gradients,
  resolve_microbatches,
  split_microbatches,
)
from samjax.train.setup import build_program
from samjax.train.step import make_train_step
from tests.synthetic_data import synthetic_batch

DETERMINISTIC_SIM = dict(num_point_iters=0, num_mask_only_iters=0, point_prob=0.0,
                         box_noise_frac=0.0, box_noise_max=0.0)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _compile_step(mesh, model, tx, state0, batch, microbatches):
  """The train step on ``mesh`` (FSDP params, batch over data x fsdp):
  (new state, metrics, compiled HLO text)."""
  sim = InteractiveConfig(**DETERMINISTIC_SIM)
  abstract = jax.eval_shape(lambda: state0)
  sh = state_shardings(abstract, param_shardings(model, mesh, DEFAULT_LOGICAL_RULES), mesh)
  bsh = batch_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_LOGICAL_RULES):
    step = jax.jit(make_train_step(model, tx, sim, microbatches=microbatches,
                                   batch_sharding=bsh, param_shardings=sh["params"]),
                   in_shardings=(sh, bsh), out_shardings=(sh, None))
    state, batch = jax.device_put(state0, sh), jax.device_put(batch, bsh)
    compiled = step.lower(state, batch).compile()
    new_state, metrics = compiled(state, batch)
  return jax.device_get(new_state), jax.device_get(metrics), compiled.as_text()


def test_microbatched_step_equals_the_full_batch_step():
  """2x4 (data x fsdp) mesh, 16 images = 2 per device, 2 microbatches (one
  image per device each): the full step's loss, metrics and gradient, and no
  image moves between devices."""
  # vit_tiny cut down (2 encoder blocks, one decoder layer): two compiles.
  model = build("vit_tiny", image_size=64, encoder_depth=2, encoder_global_attn_indexes=(1,),
                decoder_depth=1)
  params = model.init(jax.random.PRNGKey(0))
  tx = optax.sgd(1.0)  # the update is -gradient: params compare the gradients
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "rng": jax.random.PRNGKey(1)}
  batch = synthetic_batch(16, 2, 64, 16, seed=2)
  # Microbatch 1 (the odd images) has half of microbatch 0's valid masks:
  # an unweighted mean of the microbatch losses would weigh its masks double.
  batch["valid"][1::2, 1:] = False
  mesh = make_mesh((2, 4, 1))
  s1, m1, full_hlo = _compile_step(mesh, model, tx, state, batch, 1)
  s2, m2, micro_hlo = _compile_step(mesh, model, tx, state, batch, 2)

  for name in ("loss", "loss_first", "focal", "dice", "iou_mse", "iou_first", "iou_last",
               "num_masks", "grad_norm"):
    np.testing.assert_allclose(m2[name], m1[name], rtol=2e-5, atol=1e-7, err_msg=name)
  assert float(m2["num_masks"]) == 24.0
  grads1 = [p - n for p, n in zip(_leaves(params), _leaves(s1["params"]), strict=True)]
  grads2 = [p - n for p, n in zip(_leaves(params), _leaves(s2["params"]), strict=True)]
  scale = max(float(np.abs(g).max()) for g in grads1)
  assert scale > 1e-4  # the step really has a gradient
  for a, b in zip(grads2, grads1, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)

  # The decoder's backward has a few all-to-alls of its own (in both programs);
  # splitting the batch the wrong way (microbatch m = images 8m .. 8m+7)
  # adds 5 all-to-alls and 5 collective-permutes here.
  for op in ("all-to-all(", "collective-permute("):
    assert micro_hlo.count(op) == full_hlo.count(op), op
  assert micro_hlo.count("while") > full_hlo.count("while")  # the microbatch loop is there


def test_microbatch_weights_are_shares_of_the_valid_masks():
  """A toy loss: sum of the valid entries over the count, the form of the
  step's masked means. Accumulated over microbatches with 3 and 1 valid
  entries it must equal the whole batch's loss and gradient."""
  def loss_fn(w, mb, rng, weight):
    del rng
    valid = mb["valid"].astype(jnp.float32)
    loss = jnp.sum(w * mb["x"] * valid) / jnp.maximum(valid.sum(), 1.0)
    return loss * weight, {"loss": loss, "num_masks": valid.sum()}

  grad_fn = jax.grad(loss_fn, has_aux=True)
  batch = {"x": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]),
           "valid": jnp.array([[True, True], [True, False], [True, False], [False, False]])}
  w = jnp.float32(2.0)
  grads, metrics = accumulate_gradients(grad_fn, w, batch, jax.random.PRNGKey(0), 2)
  full_grads, full = grad_fn(w, batch, None, 1.0)
  # Microbatch 0 = rows 0, 2 (3 valid), microbatch 1 = rows 1, 3 (1 valid).
  np.testing.assert_allclose(metrics["loss"], full["loss"], rtol=1e-6)
  np.testing.assert_allclose(grads, full_grads, rtol=1e-6)
  assert float(metrics["num_masks"]) == 4.0
  # An unweighted mean of the two microbatch losses, 2 * (8/3 + 3) / 2,
  # would be off by 0.17.
  assert abs(float(full["loss"]) - (16 / 3 + 6) / 2) > 0.1


def test_microbatches_keep_each_devices_images():
  """Microbatch m is images m, m + M, ...: each device's own m-th image."""
  batch = {"x": jnp.arange(8)[:, None] * jnp.ones((1, 3))}
  micro = split_microbatches(batch, 2)
  assert micro["x"].shape == (2, 4, 3)
  np.testing.assert_array_equal(micro["x"][:, :, 0], [[0, 2, 4, 6], [1, 3, 5, 7]])


def test_resolve_microbatches():
  assert resolve_microbatches(1, 256, 64) == 1
  assert resolve_microbatches(0, 256, 64) == 4       # one image per device each
  assert resolve_microbatches(2, 256, 64) == 2
  with pytest.raises(ValueError, match="does not divide the 4 images"):
    resolve_microbatches(3, 256, 64)
  with pytest.raises(ValueError, match="use 0"):
    resolve_microbatches(-1, 8, 1)


def test_config_microbatches_zero_is_one_image_per_device():
  overrides = ["--config.model.overrides={'image_size': 64}", "--config.data.batch_size=16",
               "--config.data.max_masks=2", "--config.mesh.shape=(2,4,1)"]
  prog = build_program(load_config("tiny_demo", overrides + ["--config.microbatches=0"]))
  assert prog.microbatches == 2
  assert build_program(load_config("tiny_demo", overrides)).microbatches == 1
  with pytest.raises(ValueError, match="does not divide the 2 images"):
    build_program(load_config("tiny_demo", overrides + ["--config.microbatches=3"]))

"""The training plan: both decoder forms, chunks and eager chunk gradients
give the reference model's outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.decoding.training import TrainingPlan
from samjax.model.prompts import Prompts

SIZE = 256


@pytest.fixture(scope="module")
def tiny():
  model = build("vit_tiny")
  params = model.init(jax.random.PRNGKey(1))
  rng = np.random.default_rng(3)
  emb = jnp.asarray(rng.normal(size=(2, 64, 16, 16)).astype(np.float32))
  coords = rng.uniform(0, SIZE, (2, 4, 2, 2)).astype(np.float32)
  labels = rng.integers(0, 2, (2, 4, 2)).astype(np.int32)
  valid = np.ones((2, 4, 2), bool)
  valid[:, :, 1] = rng.uniform(size=(2, 4)) < 0.5
  boxes = np.tile(np.array([10.0, 20.0, 200.0, 220.0], np.float32), (2, 4, 1))
  masks = rng.normal(size=(2, 4, 64, 64)).astype(np.float32)
  prompts = Prompts.create(coords, labels, boxes, masks, point_valid=valid,
                           box_valid=rng.uniform(size=(2, 4)) < 0.5)
  return model, params, emb, prompts


def _loss(logits, iou):
  return jnp.mean(jnp.tanh(logits)) + jnp.mean(iou ** 2)


def _close(a, b, what):
  """Equal up to float32 summation order: within 1e-5 of the tree's largest
  entry (some gradients are 0 analytically, e.g. a key bias under softmax,
  and only rounding noise remains)."""
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  scale = max(float(np.abs(np.asarray(y)).max()) for y in leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5 * scale,
                               err_msg=what)


@pytest.mark.parametrize("form, chunk", [("reference", 2), ("factorized", 0),
                                         ("factorized", 2)])
def test_plan_equals_reference_outputs_and_gradients(tiny, form, chunk):
  model, params, emb, prompts = tiny
  plan = TrainingPlan(model, form, chunk)

  def loss(predict):
    return lambda p, e: _loss(*predict(p, e, prompts))

  got = jax.jit(plan.predict_masks)(params, emb, prompts)
  want = model.predict_masks(params, emb, prompts)
  _close(got, want, "outputs")
  g = jax.jit(jax.grad(loss(plan.predict_masks), argnums=(0, 1)))(params, emb)
  g_ref = jax.jit(jax.grad(loss(model.predict_masks), argnums=(0, 1)))(params, emb)
  _close(g, g_ref, "gradients")


@pytest.mark.parametrize("form", ["reference"])  # the recipes' form
def test_eager_chunk_gradients_equal_the_plain_sum(tiny, form):
  model, params, emb, prompts = tiny
  weight = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32))
  extra = jnp.arange(8, dtype=jnp.float32).reshape(2, 4) / 8

  def per_mask(logits, iou, ex):
    per = jnp.mean(jnp.tanh(logits), axis=(2, 3, 4)) * (1 + ex) + jnp.mean(iou ** 2, -1)
    return {"loss": per}, {"first": logits[:, :, 0, 0, 0]}

  eager = TrainingPlan(model, form, 2, eager_chunk_grads=True)
  plain = TrainingPlan(model, form)

  def eager_loss(p, e):
    total, _, out = eager.eager_weighted_loss(p, e, prompts, per_mask, extra, weight)
    return total, out

  def plain_loss(p, e):
    parts, out = per_mask(*plain.predict_masks(p, e, prompts), extra)
    return jnp.sum(weight * parts["loss"]), out

  (v, out), g = jax.jit(jax.value_and_grad(eager_loss, (0, 1), has_aux=True))(params, emb)
  (v_ref, out_ref), g_ref = jax.jit(jax.value_and_grad(plain_loss, (0, 1), has_aux=True))(
      params, emb)
  np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-5)
  _close(out, out_ref, "per-mask outputs")
  # The encoder takes no part in a decode: the eager sum leaves its gradient 0.
  _close({k: x for k, x in g[0].items() if k != "image_encoder"},
         {k: x for k, x in g_ref[0].items() if k != "image_encoder"}, "param gradients")
  _close(g[1], g_ref[1], "embedding gradients")


def test_unknown_decoder_form_is_refused():
  with pytest.raises(ValueError, match="decoder_form='fast'"):
    TrainingPlan(build("vit_tiny"), "fast")

"""broadcast_along: a broadcast whose gradient is a tree of adds, not a reduce."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.model.broadcast import MAX_UNROLLED, broadcast_along, sum_by_adds


def _primitives(jaxpr) -> set[str]:
  out = {eqn.primitive.name for eqn in jaxpr.eqns}
  for sub in jax.extend.core.subjaxprs(jaxpr):
    out |= _primitives(sub)
  return out


@pytest.mark.parametrize("shape,axis,n", [((1, 6, 4), 0, 8), ((3, 1, 5, 2), 1, 7),
                                          ((2, 5, 1), -1, 1)])
def test_values_and_gradient_match_broadcast_to(shape, axis, n):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  target_shape = list(shape)
  target_shape[axis] = n
  w = jnp.asarray(rng.normal(size=target_shape), jnp.float32)

  ours = broadcast_along(x, axis, n)
  want = jnp.broadcast_to(x, tuple(target_shape))
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(want))

  g_ours = jax.grad(lambda x: jnp.sum(broadcast_along(x, axis, n) * w))(x)
  g_want = jax.grad(lambda x: jnp.sum(jnp.broadcast_to(x, tuple(target_shape)) * w))(x)
  np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_want), rtol=1e-6, atol=1e-6)


def test_gradient_has_no_reduction():
  """The point of the helper: XLA's CPU sum over a short outer axis is slow."""
  x, ct = jnp.ones((1, 64, 32), jnp.float32), jnp.ones((8, 64, 32), jnp.float32)

  def vjp_primitives(f):
    return _primitives(jax.make_jaxpr(lambda x, ct: jax.vjp(f, x)[1](ct))(x, ct).jaxpr)
  assert "reduce_sum" not in vjp_primitives(lambda x: jnp.sin(broadcast_along(x, 0, 8)))
  # What it replaces:
  assert "reduce_sum" in vjp_primitives(lambda x: jnp.sin(jnp.broadcast_to(x, (8, 64, 32))))


def test_sum_by_adds_many_copies_falls_back_to_sum():
  x = jnp.arange((MAX_UNROLLED + 3) * 2, dtype=jnp.float32).reshape(MAX_UNROLLED + 3, 2)
  np.testing.assert_allclose(np.asarray(sum_by_adds(x, 0)), np.asarray(x.sum(0, keepdims=True)))
  y = x[:5]
  np.testing.assert_allclose(np.asarray(sum_by_adds(y, 0)), np.asarray(y.sum(0, keepdims=True)))


def test_refuses_an_axis_that_is_not_size_one():
  with pytest.raises(ValueError, match="size 1"):
    broadcast_along(jnp.ones((2, 3)), 0, 4)

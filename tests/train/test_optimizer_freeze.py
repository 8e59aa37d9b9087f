"""Fine-tuning knobs of the optimizer: a lower image-encoder lr, or a frozen
encoder that stays bit-identical while the rest trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.model.configs import get_config
from samjax.train.optimizer import make_optimizer


def _params():
  k = iter(jax.random.split(jax.random.PRNGKey(0), 8))
  return {
      "image_encoder": {"patch_embed": {"kernel": jax.random.normal(next(k), (4, 4))},
                        "blocks_1": {"kernel": jax.random.normal(next(k), (4, 4)),
                                     "bias": jax.random.normal(next(k), (4,))}},
      "mask_decoder": {"mlp": {"kernel": jax.random.normal(next(k), (4, 4)),
                               "bias": jax.random.normal(next(k), (4,))}},
  }


def _updates(scale, steps=3):
  params = _params()
  tx, _ = make_optimizer(params, get_config("vit_tiny"), lr=1e-2, warmup_steps=1,
                         weight_decay=0.1, image_encoder_lr_scale=scale)
  state = tx.init(params)
  grads = jax.tree_util.tree_map(lambda p: jnp.cos(3.0 * p) + 0.5, params)
  out = params
  for _ in range(steps):
    upd, state = tx.update(grads, state, out)
    out = jax.tree_util.tree_map(lambda p, u: p + u, out, upd)
  return params, out


def test_frozen_image_encoder_stays_exact_while_the_decoder_trains():
  before, after = _updates(0.0)
  for a, b in zip(jax.tree_util.tree_leaves(before["image_encoder"]),
                  jax.tree_util.tree_leaves(after["image_encoder"])):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(before["mask_decoder"]["mlp"]["kernel"],
                         after["mask_decoder"]["mlp"]["kernel"])


def test_encoder_lr_scale_scales_only_the_encoder_steps():
  before, full = _updates(1.0, steps=1)
  _, tenth = _updates(0.1, steps=1)
  step = lambda t, part: jax.tree_util.tree_map(lambda a, b: b - a, before[part], t[part])
  for a, b in zip(jax.tree_util.tree_leaves(step(full, "image_encoder")),
                  jax.tree_util.tree_leaves(step(tenth, "image_encoder"))):
    np.testing.assert_allclose(b, 0.1 * a, rtol=1e-4, atol=1e-7)
  for a, b in zip(jax.tree_util.tree_leaves(step(full, "mask_decoder")),
                  jax.tree_util.tree_leaves(step(tenth, "mask_decoder"))):
    np.testing.assert_array_equal(a, b)


def test_negative_scale_is_refused():
  with pytest.raises(ValueError, match="image_encoder_lr_scale"):
    make_optimizer(_params(), get_config("vit_tiny"), lr=1e-3, warmup_steps=1,
                   image_encoder_lr_scale=-1.0)

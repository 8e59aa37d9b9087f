"""The positional encoding's Gaussian matrix is a buffer: no gradient reaches it.

The official model registers it as a buffer (never trained); here it lives
in params, so the prompt encoder stops gradients at it. Everything else a
train step differentiates must be untouched by that.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.model.prompts import Prompts

GAUSS = ("prompt_encoder", "pe_layer", "positional_encoding_gaussian_matrix")


@pytest.fixture(scope="module")
def tiny():
  model = build("vit_tiny")
  return model, model.init(jax.random.PRNGKey(0))


def _decode_loss(model, emb, coords, labels, masks):
  def loss(params):
    prompts = Prompts.create(coords, labels, mask_inputs=masks[:, :, 0])
    logits, iou = model.predict_masks(params, emb, prompts)
    return jnp.mean(jnp.tanh(logits)) + jnp.mean(iou ** 2)
  return loss


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def test_gaussian_matrix_gets_no_gradient_and_the_rest_does(tiny):
  model, params = tiny
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(1, 64, 16, 16)).astype(np.float32))
  coords = jnp.asarray(rng.uniform(0, 256, (1, 4, 2, 2)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 2, (1, 4, 2)).astype(np.int32))
  masks = jnp.asarray(rng.normal(size=(1, 4, 1, 64, 64)).astype(np.float32))
  grads = jax.jit(jax.grad(_decode_loss(model, emb, coords, labels, masks)))(params)

  gauss = np.asarray(_leaf(grads, GAUSS))
  assert gauss.shape == _leaf(params, GAUSS).shape
  assert np.all(gauss == 0.0)
  # Gradients still reach the decoder, the point embeddings and the mask
  # embedding (the encoding's consumers and its neighbours).
  for path in [("mask_decoder", "output_upscaling_0", "kernel"),
               ("prompt_encoder", "point_embeddings_1", "embedding"),
               ("prompt_encoder", "mask_downscaling_0", "kernel")]:
    assert np.abs(np.asarray(_leaf(grads, path))).max() > 0, path


def test_forward_values_unchanged_by_the_stop(tiny):
  """stop_gradient is the identity on values: the dense encoding equals the
  formula computed from the params directly."""
  model, params = tiny
  pe = np.asarray(model.dense_pe(params)).transpose(1, 2, 0)  # [h, w, C]
  g = np.asarray(_leaf(params, GAUSS))
  h, w = pe.shape[:2]
  y, x = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
  xy = np.stack(np.meshgrid(x, y, indexing="xy"), -1) * 2 - 1
  proj = 2 * np.pi * (xy @ g)
  want = np.concatenate([np.sin(proj), np.cos(proj)], -1)
  np.testing.assert_allclose(pe, want, atol=2e-5)

"""The model's GELU and the interactive plan's ``erf`` form are both torch's
exact GELU (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from samjax.decoding.factorized_mask_decoder import erf_gelu
from samjax.model.layers import gelu as model_gelu


@pytest.mark.parametrize("gelu", [model_gelu, erf_gelu], ids=["model", "erf"])
def test_gelu_matches_torch_values_and_gradient(gelu):
  x = np.concatenate([np.linspace(-12, 12, 20001), [0.0, -1e-30, 1e-30, -40.0, 40.0]])
  x = x.astype(np.float32)
  ours = np.asarray(jax.jit(gelu)(jnp.asarray(x)))
  tx = torch.tensor(x, requires_grad=True)
  ref = torch.nn.functional.gelu(tx)
  ref.sum().backward()
  np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=0, atol=2e-6)
  grad = np.asarray(jax.jit(jax.grad(lambda v: gelu(v).sum()))(jnp.asarray(x)))
  np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=0, atol=2e-6)
  # The same function as jax's exact GELU, to float32 rounding.
  np.testing.assert_allclose(ours, np.asarray(jax.nn.gelu(x, approximate=False)),
                             rtol=0, atol=2e-6)

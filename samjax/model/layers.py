"""Building blocks shared by the encoder and decoder.

Mirrors ``segment_anything/modeling/common.py`` (``LayerNorm2d``,
``MLPBlock``) plus the small helpers the official modules inline (a Dense
with logical axes, a 2x2 stride-2 transposed conv, drop path). All
activations are channels-last (NHWC / [B, T, C]); params are float32 and
the compute dtype comes from the config. Normalisation always runs in
float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.logical_axes import param_init

# The official modules keep PyTorch's default init (kaiming_uniform(a=sqrt(5)):
# U(+-1/sqrt(fan_in)), i.e. variance 1/(3 fan_in)); training from scratch
# depends on it: with ViT-style N(0, 0.02) the un-normalised hypernetwork
# and IoU MLPs start with near-zero outputs and gradients and the mask loss
# sits at "predict nothing" for hundreds of steps.
default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
zeros = nn.initializers.zeros


def to_dtype(name: str):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}[name]


def gelu(x):
  """Exact GELU, as torch.nn.GELU() (not the tanh approximation)."""
  return jax.nn.gelu(x, approximate=False)


class Dense(nn.Module):
  """nn.Dense with logical axis names on kernel [in, out] and bias [out]."""
  features: int
  axes: Sequence[str | None] = ("embed", "mlp")
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", param_init(default_kernel_init, tuple(self.axes)),
                        (x.shape[-1], self.features), jnp.float32)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", param_init(zeros, (self.axes[-1],)),
                        (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, computed in float32 (torch eps semantics).

  Used both as ``nn.LayerNorm`` (eps 1e-5 / 1e-6) and as the official
  ``LayerNorm2d`` (which normalises channels of NCHW; channels-last here).
  Parameters are ``scale`` / ``bias`` (torch ``weight`` / ``bias``).
  """
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", param_init(nn.initializers.ones, ("norm",)),
                       (c,), jnp.float32)
    bias = self.param("bias", param_init(zeros, ("norm",)), (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * scale + bias).astype(self.dtype)


class MLPBlock(nn.Module):
  """lin1 -> act -> lin2 (official ``MLPBlock``); [..., C] -> [..., C]."""
  mlp_dim: int
  act: Callable = gelu
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = Dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="lin1")(x)
    h = self.act(h)
    return Dense(c, ("mlp", "embed"), dtype=self.dtype, name="lin2")(h)


class Conv(nn.Module):
  """2-D convolution on NHWC input; kernel [kh, kw, in, out] (torch: OIHW)."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  kernel_axes: Sequence[str | None] = (None, None, "conv_in", "embed")

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", param_init(default_kernel_init, tuple(self.kernel_axes)),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(self.stride, self.stride),
        padding=((self.padding, self.padding), (self.padding, self.padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", param_init(zeros, (self.kernel_axes[-1],)),
                        (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class ConvTranspose2x2(nn.Module):
  """Transposed conv with kernel 2, stride 2 (official ``ConvTranspose2d(k=2, s=2)``).

  The output windows do not overlap, so each input pixel becomes its own 2x2
  block: [B, H, W, Cin] -> [B, 2H, 2W, Cout]. Kernel [2, 2, Cin, Cout]
  (torch: [Cin, Cout, 2, 2]).
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", param_init(default_kernel_init, (None, None, "conv_in", "embed")),
                        (2, 2, cin, self.features), jnp.float32)
    bias = self.param("bias", param_init(zeros, ("embed",)), (self.features,), jnp.float32)
    y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(self.dtype), kernel.astype(self.dtype))
    b, h, w = x.shape[:3]
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


def drop_path(x, keep, key):
  """Stochastic depth per sample (timm ``DropPath``): [B, ...] -> [B, ...].

  Each sample is kept with probability ``keep`` (a float32 scalar, concrete
  or traced: the scanned encoder passes each block's as a scanned input) and
  scaled by 1 / keep, or zeroed. ``key`` is the caller's own dropout key (the
  encoder derives one per block, so scanned and unrolled blocks draw the
  same masks); ``key=None`` is the identity (deterministic, or no drop path).
  """
  if key is None:
    return x
  keep = jnp.asarray(keep, jnp.float32)
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  mask = jax.random.bernoulli(key, keep, shape)
  # In x's dtype: a float32 keep would promote bf16 activations.
  return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))

"""Building blocks shared by the encoder and decoder.

Mirrors ``segment_anything/modeling/common.py`` (``LayerNorm2d``,
``MLPBlock``) plus the small helpers the official modules inline (a Dense
with logical axes, a 2x2 stride-2 transposed conv, drop path). All
activations are channels-last (NHWC / [B, T, C]); params are float32 and
the compute dtype comes from the config. Normalisation always runs in
float32.
"""

from __future__ import annotations

import math
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


_SQRT_HALF = math.sqrt(0.5)


def gelu(x):
  """Exact (erf) GELU, as torch.nn.GELU(): x / 2 * (1 + erf(x / sqrt(2))).

  Written out with ``erf`` (torch's CPU formula) rather than
  ``jax.nn.gelu(approximate=False)``, which evaluates ``erfc(-x / sqrt(2))``:
  XLA's CPU erfc costs ~2.6x erf per element (0.58 vs 0.23 ns on a 2-core
  EPYC), and the mask decoder's upscaling runs GELU over 4.3M elements per
  prompt. Same values to float32 rounding (max abs diff 1e-6 at |x| <= 12).
  """
  return x * 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))


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


def _window_matmul(x, kernel):
  """A convolution whose stride equals its kernel size, without padding, as
  one matmul: [B, H, W, Cin], kernel [k, k, Cin, Cout] -> [B, H/k, W/k, Cout]
  (a trailing H or W remainder is dropped, as by the convolution).

  The k x k windows do not overlap, so each output pixel is its window's
  k*k*Cin values times the kernel. Same values as the convolution; the
  gradient is two matmuls, where XLA's CPU backend computes the kernel
  gradient of the convolution as a naive convolution over the whole image
  (60 ms per mask and pass for the 1x1 conv of the mask embedding in
  training, 30 % of a decoder pass).
  """
  k = kernel.shape[0]
  b, h, w, c = x.shape
  x = x[:, :h - h % k, :w - w % k]
  x = x.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
  return jnp.einsum("bhwijc,ijco->bhwo", x, kernel)


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
    if k == self.stride and self.padding == 0:
      y = _window_matmul(x.astype(self.dtype), kernel.astype(self.dtype))
    else:
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

  With kernel == stride the output windows do not overlap, so the op is one
  matmul followed by a pixel shuffle: [B, H, W, Cin] -> [B, 2H, 2W, Cout].
  With ``shuffle=False`` the shuffle is skipped and any [..., Cin] maps to
  [..., 2, 2, Cout] (sub-pixel row, column); the mask decoder chains two of
  these and shuffles once at the end. Kernel [2, 2, Cin, Cout] (torch:
  [Cin, Cout, 2, 2]).
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, shuffle: bool = True):
    cin = x.shape[-1]
    kernel = self.param("kernel", param_init(default_kernel_init, (None, None, "conv_in", "embed")),
                        (2, 2, cin, self.features), jnp.float32)
    bias = self.param("bias", param_init(zeros, ("embed",)), (self.features,), jnp.float32)
    y = jnp.einsum("...c,ijco->...ijo", x.astype(self.dtype), kernel.astype(self.dtype))
    y = y + bias.astype(self.dtype)
    if not shuffle:
      return y
    b, h, w = x.shape[:3]
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.features)


class DropPath(nn.Module):
  """Stochastic depth per sample (timm ``DropPath``); identity when deterministic.

  ``rate`` is a Python float or a traced scalar (the scanned encoder passes
  each block's rate as a scanned input); a traced rate of 0 keeps every
  sample, since ``bernoulli(p=1)`` is always True.
  """
  rate: float | jax.Array = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    # A traced float32 rate would promote bf16 activations; a Python float is
    # weakly typed and already keeps x's dtype.
    scale = keep if isinstance(keep, float) else jnp.asarray(keep, x.dtype)
    return jnp.where(mask, x / scale, jnp.zeros_like(x))

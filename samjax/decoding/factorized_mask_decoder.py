"""The mask decoder in the form interactive decoding runs fastest.

Same parameters and values as ``samjax.model.mask_decoder.MaskDecoder``
(tests compare them), executed differently:
  - the two-way transformer in its factorized form, optionally reading the
    first block's image side precomputed once per image (``image_terms``);
  - only the mask tokens asked for are decoded past the last block;
  - the 4x upscaling stays in sub-pixel layout [B, h, w, 2, 2, 2, 2, C/8],
    so the hypernetwork product is one matmul and only its small result is
    reordered into pixels;
  - ``mask_grid`` upscales only the top-left cells a caller reads;
  - GELU written with ``erf`` (what XLA:CPU evaluates fastest).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.decoding.factorized_transformer import TwoWayTransformer
from samjax.logical_axes import constrain, param_init
from samjax.model.configs import SamConfig
from samjax.model.layers import LayerNorm, default_kernel_init, to_dtype, zeros
from samjax.model.mask_decoder import MLP, output_tokens

_SQRT_HALF = math.sqrt(0.5)


def erf_gelu(x):
  """Exact GELU as x / 2 * (1 + erf(x / sqrt(2))) (torch's CPU formula).

  ``jax.nn.gelu(approximate=False)`` evaluates erfc instead, which XLA:CPU
  computes ~2.6x slower per element; the upscaling runs GELU over 4.3M
  elements per prompt. Equal to float32 rounding.
  """
  return x * 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))


class SubPixelConvTranspose2x2(nn.Module):
  """``ConvTranspose2x2`` (same params) without the pixel shuffle:
  [..., Cin] -> [..., 2, 2, Cout] (sub-pixel row, column)."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", param_init(default_kernel_init, (None, None, "conv_in", "embed")),
                        (2, 2, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", param_init(zeros, ("embed",)), (self.features,), jnp.float32)
    y = jnp.einsum("...c,ijco->...ijo", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class FactorizedMaskDecoder(nn.Module):
  config: SamConfig

  @nn.compact
  def __call__(self, image_embeddings, image_pe, sparse, sparse_valid, dense,
               image_terms=None, mask_tokens: tuple[int, ...] | None = None,
               mask_grid: tuple[int, int] | None = None):
    """Inputs as ``MaskDecoder``'s.

    ``image_terms``: optional ``InteractivePlan.prepare`` terms of the b images
    (their [b, h*w, C] sum of embedding and no-mask embedding, and the first
    two-way block's projections of it), shared by the B / b consecutive
    prompts of each image (then ``image_embeddings`` and ``dense`` are not
    read; the first block reads the terms once per image).

    ``mask_tokens``: which of the mask tokens to return (static; default
    all, in order): only they and the IoU token query the image in the final
    attention and only their hypernetworks run, so (1, 2, 3) (the official
    multimask slice) or (0,) cost less than all four and then slicing. The
    values are those of the same tokens decoded with all four.

    ``mask_grid``: (gh, gw) <= (h, w), static: upscale only the top-left gh x
    gw cells of the image grid, giving that corner of the logits
    [B, K, 4gh, 4gw] (same values: the upscaling and the hypernetwork product
    are per cell). For callers that read only part of the mask, such as the
    automatic mask generator on a non-square image, whose resized photo
    covers only the top-left part of the padded input.
    Returns masks [B, K, 4h, 4w] (or [B, K, 4gh, 4gw]) and IoU [B, K],
    K = len(mask_tokens)."""
    cfg = self.config
    c = cfg.prompt_embed_dim
    dt = to_dtype(cfg.dtype)
    _, h, w, _ = image_embeddings.shape
    b = sparse.shape[0]  # prompts (B)
    n_tokens = cfg.num_mask_tokens
    sel = tuple(range(n_tokens)) if mask_tokens is None else tuple(mask_tokens)
    if not sel or any(not 0 <= t < n_tokens for t in sel):
      raise ValueError(f"mask_tokens {mask_tokens} must name tokens in 0..{n_tokens - 1}")
    emb_init = param_init(nn.initializers.normal(1.0), (None, "embed"))
    iou_token = nn.Embed(1, c, embedding_init=emb_init, name="iou_token").embedding
    mask_token_emb = nn.Embed(n_tokens, c, embedding_init=emb_init,
                              name="mask_tokens").embedding
    tokens, token_valid = output_tokens(iou_token, mask_token_emb, sparse, sparse_valid)

    if image_terms is None:
      src = (image_embeddings + dense).reshape(b, h * w, c)
      first_heads = None
    else:
      src, *first_heads = image_terms
    src = constrain(src, ("activation_batch", "activation_length", "activation_embed"))
    pos = jnp.broadcast_to(image_pe.reshape(1, h * w, c), (b, h * w, c))
    hs, src = TwoWayTransformer(cfg.decoder_depth, c, cfg.decoder_num_heads,
                                cfg.decoder_mlp_dim, dtype=dt, name="transformer")(
                                    src, pos, tokens, token_valid, first_heads,
                                    final_tokens=(0,) + tuple(1 + t for t in sel))
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1:, :]  # [B, K, C], the tokens of sel in order

    # Upscaling 4x in sub-pixel layout [B, h, w, i1, j1, i2, j2, C/8] (no
    # intermediate pixel shuffles): the hypernetwork product runs as one
    # matmul and only its small [B, K, ...] result is shuffled (row 4y +
    # 2*i1 + i2), instead of shuffling 2M-element activations twice.
    x = src.reshape(b, h, w, c)
    if mask_grid is not None:
      gh, gw = mask_grid
      if not (0 < gh <= h and 0 < gw <= w):
        raise ValueError(f"mask_grid {mask_grid} must lie within the {h}x{w} grid")
      x, h, w = x[:, :gh, :gw], gh, gw
    x = SubPixelConvTranspose2x2(c // 4, dtype=dt, name="output_upscaling_0")(x)
    x = erf_gelu(LayerNorm(eps=1e-6, dtype=dt, name="output_upscaling_1")(x))
    x = erf_gelu(SubPixelConvTranspose2x2(c // 8, dtype=dt, name="output_upscaling_3")(x))
    hyper_in = jnp.stack([
        MLP(c, c // 8, 3, dtype=dt, name=f"output_hypernetworks_mlps_{t}")(
            mask_tokens_out[:, j, :]) for j, t in enumerate(sel)], axis=1)
    masks = jnp.einsum("bnc,bmc->bnm", x.reshape(b, -1, x.shape[-1]), hyper_in,
                       preferred_element_type=jnp.float32)
    # [B, (h, w, i1, j1, i2, j2), K] -> [B, K, (h, i1, i2), (w, j1, j2)]
    k = len(sel)
    masks = masks.reshape(b, h, w, 2, 2, 2, 2, k).transpose(0, 7, 1, 3, 5, 2, 4, 6)
    masks = masks.reshape(b, k, 4 * h, 4 * w)
    iou_pred = MLP(cfg.iou_head_hidden_dim, n_tokens, cfg.iou_head_depth, dtype=dt,
                   name="iou_prediction_head")(iou_token_out)
    iou_pred = jnp.stack([iou_pred[:, t] for t in sel], axis=1)
    return masks, iou_pred.astype(jnp.float32)


def channels_last_pe(model, params):
  """``model``'s image positional encoding as [h, w, C] (what the factorized
  decoder reads)."""
  return jnp.transpose(model.dense_pe(params), (1, 2, 0))


def decode_prompts(model, params, embeddings, image_pe, prompts, image_terms=None,
                   mask_tokens: tuple[int, ...] | None = None,
                   mask_grid: tuple[int, int] | None = None):
  """``FactorizedMaskDecoder`` on ``model``'s params for a ``Prompts`` batch.

  embeddings [b, h, w, C] channels-last, one per image; image_pe [h, w, C];
  prompts [b, M, ...]; ``image_terms``, ``mask_tokens``, ``mask_grid`` as
  ``FactorizedMaskDecoder``'s (without image terms each prompt reads its own
  copy of its image's embedding). -> (logits [b, M, K, 4h, 4w], IoU [b, M, K]).
  """
  b, m = prompts.shape
  sparse, valid, dense = model.embed_prompts(params, prompts)
  if image_terms is None:
    embeddings = constrain(jnp.repeat(embeddings, m, axis=0),
                           ("activation_batch", None, None, "activation_embed"))
  masks, iou = FactorizedMaskDecoder(model.config).apply(
      {"params": params["mask_decoder"]}, embeddings, image_pe, sparse, valid, dense,
      image_terms, mask_tokens, mask_grid)
  return masks.reshape(b, m, *masks.shape[1:]), iou.reshape(b, m, -1)

"""SAM mask decoder: two-way transformer + hypernetwork mask heads + IoU head.

Mirrors ``segment_anything/modeling/mask_decoder.py`` (``MaskDecoder``,
``MLP``). Output tokens are [iou_token, mask_token_0..3]; mask token 0 is
the single-mask output, 1..3 the ambiguity-aware multimask outputs.

Shapes (C = 256, h = w = 64 at full size, K = 4 mask tokens):
  image_embeddings [B, h, w, C] (one per prompt), image_pe [h, w, C],
  sparse [B, S, C] with sparse_valid [B, S], dense [B, h, w, C]
  -> mask logits [B, K, 4h, 4w], IoU predictions [B, K].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.logical_axes import constrain, param_init
from samjax.model.configs import SamConfig
from samjax.model.layers import ConvTranspose2x2, Dense, LayerNorm, gelu, to_dtype
from samjax.model.transformer import TwoWayTransformer


class MLP(nn.Module):
  """``num_layers`` Linear layers with ReLU in between (official ``MLP``)."""
  hidden_dim: int
  output_dim: int
  num_layers: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = Dense(self.output_dim if last else self.hidden_dim, ("embed", "mlp"),
                dtype=self.dtype, name=f"layers_{i}")(x)
      if not last:
        x = jax.nn.relu(x)
    return x


def output_tokens(iou_token, mask_tokens, sparse, sparse_valid):
  """[1, C] IoU token, [K, C] mask tokens, [B, S, C] prompt tokens (+ [B, S]
  validity) -> the decoder's tokens [B, 1 + K + S, C] and their validity."""
  b = sparse.shape[0]
  fixed = jnp.concatenate([iou_token, mask_tokens], axis=0)
  tokens = jnp.concatenate(
      [jnp.broadcast_to(fixed, (b,) + fixed.shape), sparse.astype(fixed.dtype)], axis=1)
  valid = jnp.concatenate([jnp.ones((b, fixed.shape[0]), bool), sparse_valid], axis=1)
  return tokens, valid


class MaskDecoder(nn.Module):
  config: SamConfig

  @nn.compact
  def __call__(self, image_embeddings, image_pe, sparse, sparse_valid, dense):
    """See the module docstring: -> (logits [B, K, 4h, 4w], IoU [B, K] float32)."""
    cfg = self.config
    c, k = cfg.prompt_embed_dim, cfg.num_mask_tokens
    dt = to_dtype(cfg.dtype)
    b, h, w, _ = image_embeddings.shape
    emb_init = param_init(nn.initializers.normal(1.0), (None, "embed"))
    iou_token = nn.Embed(1, c, embedding_init=emb_init, name="iou_token").embedding
    mask_tokens = nn.Embed(k, c, embedding_init=emb_init, name="mask_tokens").embedding
    tokens, token_valid = output_tokens(iou_token, mask_tokens, sparse, sparse_valid)

    src = constrain((image_embeddings + dense).reshape(b, h * w, c),
                    ("activation_batch", "activation_length", "activation_embed"))
    pos = jnp.broadcast_to(image_pe.reshape(1, h * w, c), (b, h * w, c))
    hs, src = TwoWayTransformer(cfg.decoder_depth, c, cfg.decoder_num_heads,
                                cfg.decoder_mlp_dim, dtype=dt, name="transformer")(
                                    src, pos, tokens, token_valid)

    # Upscale the image tokens 4x: [B, h, w, C] -> [B, 4h, 4w, C/8].
    x = ConvTranspose2x2(c // 4, dtype=dt, name="output_upscaling_0")(src.reshape(b, h, w, c))
    x = gelu(LayerNorm(eps=1e-6, dtype=dt, name="output_upscaling_1")(x))
    x = gelu(ConvTranspose2x2(c // 8, dtype=dt, name="output_upscaling_3")(x))
    # Each mask token's hypernetwork gives the weights of its mask: [B, K, C/8].
    hyper_in = jnp.stack([
        MLP(c, c // 8, 3, dtype=dt, name=f"output_hypernetworks_mlps_{i}")(hs[:, 1 + i])
        for i in range(k)], axis=1)
    masks = jnp.einsum("bkc,bhwc->bkhw", hyper_in, x, preferred_element_type=jnp.float32)
    iou_pred = MLP(cfg.iou_head_hidden_dim, k, cfg.iou_head_depth, dtype=dt,
                   name="iou_prediction_head")(hs[:, 0])
    return masks, iou_pred.astype(jnp.float32)

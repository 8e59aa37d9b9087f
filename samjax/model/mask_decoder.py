"""SAM mask decoder: two-way transformer + hypernetwork mask heads + IoU head.

Mirrors ``segment_anything/modeling/mask_decoder.py`` (``MaskDecoder``,
``MLP``). Output tokens are [iou_token, mask_token_0..3]; mask token 0 is
the single-mask output, 1..3 the ambiguity-aware multimask outputs.

Shapes (C = 256, h = w = 64 at full size):
  image_embeddings [B, h, w, C] (already one per prompt), image_pe [h, w, C],
  sparse [B, S, C] with sparse_valid [B, S], dense [B, h, w, C]
  -> mask logits [B, 4, 4h, 4w], iou predictions [B, 4] (all four tokens;
  ``samjax.model.sam`` applies the official multimask slicing).
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


class MaskDecoder(nn.Module):
  config: SamConfig

  @nn.compact
  def __call__(self, image_embeddings, image_pe, sparse, sparse_valid, dense,
               image_terms=None):
    """``image_terms``: optional ``Sam.decoder_image_terms`` of the b images,
    [b, h*w, C] each, shared by the B / b consecutive prompts of each image
    (then ``image_embeddings`` and ``dense`` are not read: the terms already
    hold their sum; the first two-way block reads them once per image)."""
    cfg = self.config
    c = cfg.prompt_embed_dim
    dt = to_dtype(cfg.dtype)
    _, h, w, _ = image_embeddings.shape
    b = sparse.shape[0]  # prompts (B)
    n_tokens = cfg.num_mask_tokens
    emb_init = param_init(nn.initializers.normal(1.0), (None, "embed"))
    iou_token = nn.Embed(1, c, embedding_init=emb_init, name="iou_token").embedding
    mask_tokens = nn.Embed(n_tokens, c, embedding_init=emb_init,
                           name="mask_tokens").embedding
    output_tokens = jnp.concatenate([iou_token, mask_tokens], axis=0)
    output_tokens = jnp.broadcast_to(output_tokens, (b,) + output_tokens.shape)
    tokens = jnp.concatenate([output_tokens, sparse.astype(output_tokens.dtype)], axis=1)
    token_valid = jnp.concatenate(
        [jnp.ones((b, 1 + n_tokens), bool), sparse_valid], axis=1)

    if image_terms is None:
      src = (image_embeddings + dense).reshape(b, h * w, c)
      first_keys_pe = None
    else:
      src, first_keys_pe = image_terms
    src = constrain(src, ("batch", "length", "embed"))
    pos = jnp.broadcast_to(image_pe.reshape(1, h * w, c), (b, h * w, c))
    hs, src = TwoWayTransformer(cfg.decoder_depth, c, cfg.decoder_num_heads,
                                cfg.decoder_mlp_dim, dtype=dt,
                                factorize=cfg.decoder_factorized_attention,
                                name="transformer")(
                                    src, pos, tokens, token_valid, first_keys_pe)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1:1 + n_tokens, :]

    # Upscaling 4x in sub-pixel layout [B, h, w, i1, j1, i2, j2, C/8] (no
    # intermediate pixel shuffles): the hypernetwork product runs as one
    # matmul and only its small [B, K, ...] result is shuffled (row 4y +
    # 2*i1 + i2), instead of shuffling 2M-element activations twice.
    x = src.reshape(b, h, w, c)
    x = ConvTranspose2x2(c // 4, dtype=dt, name="output_upscaling_0")(x, shuffle=False)
    x = gelu(LayerNorm(eps=1e-6, dtype=dt, name="output_upscaling_1")(x))
    x = gelu(ConvTranspose2x2(c // 8, dtype=dt, name="output_upscaling_3")(x, shuffle=False))
    hyper_in = jnp.stack([
        MLP(c, c // 8, 3, dtype=dt, name=f"output_hypernetworks_mlps_{i}")(
            mask_tokens_out[:, i, :]) for i in range(n_tokens)], axis=1)
    masks = jnp.einsum("bnc,bmc->bnm", x.reshape(b, -1, x.shape[-1]), hyper_in,
                       preferred_element_type=jnp.float32)
    # [B, (h, w, i1, j1, i2, j2), K] -> [B, K, (h, i1, i2), (w, j1, j2)]
    masks = masks.reshape(b, h, w, 2, 2, 2, 2, n_tokens).transpose(0, 7, 1, 3, 5, 2, 4, 6)
    masks = masks.reshape(b, n_tokens, 4 * h, 4 * w)
    iou_pred = MLP(cfg.iou_head_hidden_dim, n_tokens, cfg.iou_head_depth, dtype=dt,
                   name="iou_prediction_head")(iou_token_out)
    return masks, iou_pred.astype(jnp.float32)

"""SAM prompt encoder: points, boxes and mask prompts -> sparse/dense embeddings.

Mirrors ``segment_anything/modeling/prompt_encoder.py`` (``PromptEncoder``,
``PositionEmbeddingRandom``). Parameter names follow the official state_dict
(``point_embeddings_0/embedding`` <-> ``point_embeddings.0.weight``,
``mask_downscaling_3`` <-> ``mask_downscaling.3``).

Official prompt semantics kept exactly: coordinates are in the padded input
frame (e.g. 0..1024) and shifted by +0.5 to pixel centres; label 1 =
foreground, 0 = background, -1 = "not a point" (the official padding token:
PE zeroed, ``not_a_point_embed`` added). Fixed-shape batching adds a separate
validity mask (see ``samjax.model.sam``): invalid slots are masked out of
attention, so padding changes nothing.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.logical_axes import param_init
from samjax.model.configs import SamConfig
from samjax.model.layers import Conv, LayerNorm, gelu, to_dtype


class PositionEmbeddingRandom(nn.Module):
  """Random-Fourier positional encoding; coords in [0, 1] -> [..., 2F].

  The Gaussian matrix [2, F] is a fixed buffer in the official model; here
  it lives in params (so checkpoints carry it), the optimizer freezes it and
  no gradient flows into it (``stop_gradient``, as for the official
  buffer): otherwise every train step would back-propagate through each
  prompt's copy of the 64x64 dense encoding (a sum over the copies that
  XLA's CPU backend runs slowly) only for the optimizer to drop the result.
  """
  num_pos_feats: int

  def setup(self):
    self.positional_encoding_gaussian_matrix = self.param(
        "positional_encoding_gaussian_matrix",
        param_init(nn.initializers.normal(1.0), (None, None)),
        (2, self.num_pos_feats), jnp.float32)

  def encode(self, coords):
    """coords [..., 2] (x, y) normalised to [0, 1] -> [..., 2F] float32."""
    coords = 2.0 * coords.astype(jnp.float32) - 1.0
    coords = coords @ jax.lax.stop_gradient(self.positional_encoding_gaussian_matrix)
    coords = 2.0 * math.pi * coords
    return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

  def grid(self, h: int, w: int):
    """Dense PE of an h x w grid of cell centres: [h, w, 2F]."""
    y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
    x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
    xy = jnp.stack(jnp.meshgrid(x, y, indexing="xy"), axis=-1)  # [h, w, 2]
    return self.encode(xy)

  def encode_coords(self, coords, image_size):
    """Pixel coords [..., 2] in an (H, W) frame -> [..., 2F]."""
    h, w = image_size
    return self.encode(coords / jnp.asarray([w, h], jnp.float32))


class PromptEncoder(nn.Module):
  """Sparse (points, box corners) and dense (mask) prompt embeddings."""
  config: SamConfig

  def setup(self):
    cfg = self.config
    c = cfg.prompt_embed_dim
    dtype = to_dtype(cfg.dtype)
    emb_init = param_init(nn.initializers.normal(1.0), (None, "embed"))
    self.pe_layer = PositionEmbeddingRandom(c // 2)
    # 0: negative point, 1: positive point, 2/3: box top-left/bottom-right.
    self.point_embeddings = [nn.Embed(1, c, embedding_init=emb_init)
                             for _ in range(4)]
    self.not_a_point_embed = nn.Embed(1, c, embedding_init=emb_init)
    self.no_mask_embed = nn.Embed(1, c, embedding_init=emb_init)
    m = cfg.mask_in_chans
    self.mask_downscaling_0 = Conv(m // 4, 2, stride=2, dtype=dtype)
    self.mask_downscaling_1 = LayerNorm(eps=1e-6, dtype=dtype)
    self.mask_downscaling_3 = Conv(m, 2, stride=2, dtype=dtype)
    self.mask_downscaling_4 = LayerNorm(eps=1e-6, dtype=dtype)
    self.mask_downscaling_6 = Conv(c, 1, dtype=dtype)

  @property
  def input_image_size(self):
    return (self.config.image_size, self.config.image_size)

  def dense_pe(self):
    """Positional encoding of the image embedding grid: [h, w, C] float32."""
    g = self.config.embedding_size
    return self.pe_layer.grid(g, g)

  def embed_points(self, coords, labels):
    """coords [..., N, 2] (input frame), labels [..., N] -> [..., N, C] float32."""
    pe = self.pe_layer.encode_coords(coords + 0.5, self.input_image_size)
    labels = labels[..., None]
    not_a_point = labels == -1
    pe = jnp.where(not_a_point, 0.0, pe)
    pe = pe + jnp.where(not_a_point, self.not_a_point_embed.embedding[0], 0.0)
    pe = pe + jnp.where(labels == 0, self.point_embeddings[0].embedding[0], 0.0)
    pe = pe + jnp.where(labels == 1, self.point_embeddings[1].embedding[0], 0.0)
    return pe

  def embed_boxes(self, boxes):
    """boxes [..., 4] as x0, y0, x1, y1 (input frame) -> corners [..., 2, C]."""
    corners = (boxes + 0.5).reshape(boxes.shape[:-1] + (2, 2))
    pe = self.pe_layer.encode_coords(corners, self.input_image_size)
    corner_embed = jnp.stack([self.point_embeddings[2].embedding[0],
                              self.point_embeddings[3].embedding[0]])
    return pe + corner_embed

  def embed_masks(self, masks):
    """masks [B, 4h, 4w, 1] low-res logits -> [B, h, w, C]."""
    x = self.mask_downscaling_0(masks)
    x = gelu(self.mask_downscaling_1(x))
    x = self.mask_downscaling_3(x)
    x = gelu(self.mask_downscaling_4(x))
    return self.mask_downscaling_6(x)

  def no_mask_dense(self):
    """The learned 'no mask' dense embedding: [C]."""
    return self.no_mask_embed.embedding[0]

  def __call__(self, coords, labels, boxes, masks):
    """Used only by init: touches every parameter once."""
    return (self.embed_points(coords, labels), self.embed_boxes(boxes),
            self.embed_masks(masks), self.dense_pe(), self.no_mask_dense())

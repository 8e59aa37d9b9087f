"""The SAM model: image encoder + prompt encoder + mask decoder, and its batched API.

Mirrors ``segment_anything/modeling/sam.py``. ``SamModel`` is the public,
pure-functional face: every method takes ``params`` (a plain nested dict,
the same tree orbax saves and ``samjax.interop`` maps to the official
state_dict) and is jit-compatible with fixed shapes.

Prompts come as ``samjax.model.prompts.Prompts`` (B images x M prompts).
The official rule "append one not-a-point token when there are points but no
box" is applied per prompt through the validity masks, so a padded batch
gives each prompt exactly the official result. How a decode is *executed*
(cached per-image terms, prompt chunks, eager gradients) is not the model's
business: see ``samjax.decoding``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.logical_axes import constrain
from samjax.model.configs import PIXEL_MEAN, PIXEL_STD, SamConfig
from samjax.model.image_encoder import ImageEncoderViT
from samjax.model.mask_decoder import MaskDecoder
from samjax.model.prompt_encoder import PromptEncoder
from samjax.model.prompts import Prompts


class Sam(nn.Module):
  """Linen module holding the three parts; see ``SamModel`` for the API."""
  config: SamConfig

  def setup(self):
    self.image_encoder = ImageEncoderViT(self.config)
    self.prompt_encoder = PromptEncoder(self.config)
    self.mask_decoder = MaskDecoder(self.config)

  def embed_images(self, images, deterministic: bool = True):
    """[B, 3, S, S] normalised, padded -> [B, C, S/16, S/16] float32."""
    x = self.image_encoder(jnp.transpose(images, (0, 2, 3, 1)), deterministic)
    return jnp.transpose(x.astype(jnp.float32), (0, 3, 1, 2))

  def dense_pe(self):
    """The image positional encoding, [C, h, w] (official ``get_dense_pe()[0]``)."""
    return jnp.transpose(self.prompt_encoder.dense_pe(), (2, 0, 1))

  def embed_prompts(self, prompts: Prompts):
    """-> sparse tokens [B*M, S, C] with validity [B*M, S], dense [B*M, h, w, C]."""
    cfg, pe = self.config, self.prompt_encoder
    c, g = cfg.prompt_embed_dim, cfg.embedding_size
    b, m = prompts.shape
    sparse, valid = [], []
    if prompts.point_coords is not None:
      sparse.append(pe.embed_points(prompts.point_coords.astype(jnp.float32),
                                    prompts.point_labels))
      valid.append(prompts.point_valid)
      # Official: one extra not-a-point token when points come without a box.
      has_points = jnp.any(prompts.point_valid, axis=-1)
      has_box = prompts.box_valid if prompts.boxes is not None else jnp.zeros_like(has_points)
      sparse.append(pe.embed_points(jnp.zeros((b, m, 1, 2), jnp.float32),
                                    -jnp.ones((b, m, 1), jnp.int32)))
      valid.append((has_points & ~has_box)[..., None])
    if prompts.boxes is not None:
      sparse.append(pe.embed_boxes(prompts.boxes.astype(jnp.float32)))
      valid.append(jnp.broadcast_to(prompts.box_valid[..., None], (b, m, 2)))
    if sparse:
      sparse = jnp.concatenate(sparse, axis=2).reshape(b * m, -1, c)
      valid = jnp.concatenate(valid, axis=2).reshape(b * m, -1)
    else:
      sparse = jnp.zeros((b * m, 0, c), jnp.float32)
      valid = jnp.zeros((b * m, 0), bool)

    no_mask = pe.no_mask_dense()
    if prompts.mask_inputs is None:
      dense = jnp.broadcast_to(no_mask, (b * m, g, g, c))
    else:
      s = cfg.mask_input_size
      masks = prompts.mask_inputs.reshape(b * m, s, s, 1).astype(jnp.float32)
      dense = jnp.where(prompts.mask_valid.reshape(b * m, 1, 1, 1),
                        pe.embed_masks(masks).astype(jnp.float32), no_mask)
    return sparse, valid, dense

  def predict_masks(self, embeddings, prompts: Prompts):
    """[B, C, h, w] embeddings -> all mask tokens' logits [B, M, K, 4h, 4w]
    and IoU predictions [B, M, K] (official ``MaskDecoder.predict_masks``)."""
    b, m = prompts.shape
    sparse, valid, dense = self.embed_prompts(prompts)
    emb = jnp.transpose(embeddings, (0, 2, 3, 1))                    # [B, h, w, C]
    emb = jnp.repeat(emb, m, axis=0)                                 # one per prompt
    emb = constrain(emb, ("activation_batch", None, None, "activation_embed"))
    masks, iou = self.mask_decoder(emb, self.prompt_encoder.dense_pe(), sparse, valid, dense)
    return masks.reshape(b, m, *masks.shape[1:]), iou.reshape(b, m, -1)

  def __call__(self, images, point_coords, point_labels, boxes, mask_inputs):
    """Runs every part once (used by ``init``)."""
    prompts = Prompts.create(point_coords, point_labels, boxes, mask_inputs)
    return self.predict_masks(self.embed_images(images), prompts)


def select_outputs(logits, iou, multimask_output: bool):
  """The official output slice: mask tokens 1..3 with ``multimask_output``,
  else token 0. [..., K, 4h, 4w], [..., K] -> [..., 3 or 1, ...]."""
  sel = slice(1, None) if multimask_output else slice(0, 1)
  return logits[..., sel, :, :], iou[..., sel]


@dataclasses.dataclass(frozen=True)
class SamModel:
  """Pure-functional SAM: ``SamModel(config).embed_images(params, images)``."""
  config: SamConfig

  @property
  def module(self) -> Sam:
    return Sam(self.config)

  # ---- parameters -------------------------------------------------------
  def _init_inputs(self):
    cfg = self.config
    s, ms = cfg.image_size, cfg.mask_input_size
    return (jnp.zeros((1, 3, s, s), jnp.float32), jnp.zeros((1, 1, 1, 2), jnp.float32),
            jnp.ones((1, 1, 1), jnp.int32), jnp.zeros((1, 1, 4), jnp.float32),
            jnp.zeros((1, 1, ms, ms), jnp.float32))

  def init_boxed(self, rng):
    """Params with logical-axis metadata (``nn.LogicallyPartitioned`` leaves)."""
    return self.module.init(rng, *self._init_inputs())["params"]

  def init(self, rng) -> dict:
    """Random float32 params as a plain nested dict.

    Jitted so XLA drops the forward pass ``init`` traces (only params are
    returned); a ViT-H initialises without running the encoder.
    """
    return jax.jit(lambda r: nn.unbox(self.init_boxed(r)))(rng)

  def logical_axes(self):
    """Pytree (same structure as params) of logical-axis PartitionSpecs."""
    boxed = jax.eval_shape(self.init_boxed, jax.random.PRNGKey(0))
    return nn.get_partition_spec(boxed)

  def param_shapes(self):
    """Pytree of ``jax.ShapeDtypeStruct`` of the params."""
    return jax.eval_shape(self.init, jax.random.PRNGKey(0))

  # ---- forward ----------------------------------------------------------
  def embed_images(self, params, images, *, deterministic: bool = True, rngs=None):
    """images [B, 3, S, S] normalised + padded (official ``preprocess``) -> [B, C, S/16, S/16]."""
    return self.module.apply({"params": params}, images, deterministic,
                             method=Sam.embed_images, rngs=rngs)

  def decode(self, params, embeddings, prompts: Prompts, multimask_output: bool = True):
    """Prompted mask prediction: [B, C, h, w] embeddings, ``Prompts`` (B x M)
    -> (low-res logits [B, M, K, 4h, 4w] float32, IoU [B, M, K]); K = 3
    with ``multimask_output``, else 1 (the official slicing)."""
    return select_outputs(*self.predict_masks(params, embeddings, prompts), multimask_output)

  def predict_masks(self, params, embeddings, prompts: Prompts):
    """All four mask tokens: ([B, M, 4, 4h, 4w], [B, M, 4]); training reads these."""
    return self.module.apply({"params": params}, embeddings, prompts,
                             method=Sam.predict_masks)

  def embed_prompts(self, params, prompts: Prompts):
    """``Sam.embed_prompts``: (sparse [B*M, S, C], validity [B*M, S], dense [B*M, h, w, C])."""
    return self.module.apply({"params": params}, prompts, method=Sam.embed_prompts)

  def dense_pe(self, params):
    """Image positional encoding [C, h, w] (official ``get_dense_pe()[0]``)."""
    return self.module.apply({"params": params}, method=Sam.dense_pe)

  # ---- pre-processing ---------------------------------------------------
  def preprocess(self, images, image_hw=None):
    """[B, 3, H, W] RGB 0-255 (H, W <= S) -> normalised, zero-padded [B, 3, S, S].

    Same as the official ``Sam.preprocess``; see ``normalize_and_pad``.
    """
    return normalize_and_pad(images, self.config.image_size, image_hw)


def normalize_and_pad(images, size: int, image_hw=None):
  """[..., 3, H, W] RGB 0-255 (H, W <= size) -> normalised [..., 3, size, size].

  The official ``Sam.preprocess``: normalise, then zero-pad bottom/right.
  ``image_hw`` [B, 2] (h, w) gives each image's own extent when a batch
  [B, 3, H, W] arrives padded already (a training batch holds images of
  different sizes at S x S): pixels outside it become 0, as if that image
  had been padded here. Training and ``SamModel.preprocess`` both run this,
  so the model sees the same input either way.
  """
  h, w = images.shape[-2:]
  if h > size or w > size:
    raise ValueError(f"image {h}x{w} larger than the model input {size}; resize "
                     "the longest side to it first")
  mean = jnp.asarray(PIXEL_MEAN, jnp.float32).reshape(3, 1, 1)
  std = jnp.asarray(PIXEL_STD, jnp.float32).reshape(3, 1, 1)
  x = (jnp.asarray(images, jnp.float32) - mean) / std
  if image_hw is not None:
    # Padding pixels arrive as 0, which normalises to non-zero values; the
    # model must see exactly 0 there.
    image_hw = jnp.asarray(image_hw)
    rows = jnp.arange(h)[None, :, None] < image_hw[:, 0, None, None]
    cols = jnp.arange(w)[None, None, :] < image_hw[:, 1, None, None]
    x = jnp.where((rows & cols)[:, None], x, 0.0)
  pad = [(0, 0)] * (x.ndim - 2) + [(0, size - h), (0, size - w)]
  return jnp.pad(x, pad)


def build(variant_or_config, **overrides) -> SamModel:
  """``build('vit_b')`` or ``build(SamConfig(...))`` -> ``SamModel``."""
  from samjax.model.configs import get_config
  if isinstance(variant_or_config, SamConfig):
    cfg = variant_or_config.replace(**overrides) if overrides else variant_or_config
  else:
    cfg = get_config(variant_or_config, **overrides)
  return SamModel(cfg)

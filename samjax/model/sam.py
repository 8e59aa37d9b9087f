"""The SAM model: image encoder + prompt encoder + mask decoder, and its batched API.

Mirrors ``segment_anything/modeling/sam.py``. ``SamModel`` is the public,
pure-functional face: every method takes ``params`` (a plain nested dict,
the same tree orbax saves and ``samjax.interop`` maps to the official
state_dict) and is jit-compatible with fixed shapes.

Prompt batching: B images, M prompts per image, N point slots per prompt.
  point_coords [B, M, N, 2] (x, y in the padded input frame, e.g. 0..1024),
  point_labels [B, M, N] (1 fg, 0 bg, -1 official "not a point"),
  point_valid  [B, M, N] bool (False = padding slot, ignored exactly),
  boxes [B, M, 4] (x0, y0, x1, y1) with box_valid [B, M],
  mask_inputs [B, M, 4h, 4w] low-res logits with mask_valid [B, M].
The official rule "append one not-a-point token when there are points but no
box" is applied per prompt through the validity masks, so a padded batch
gives each prompt exactly the official result.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from samjax.logical_axes import constrain
from samjax.model.configs import PIXEL_MEAN, PIXEL_STD, SamConfig
from samjax.model.image_encoder import ImageEncoderViT
from samjax.model.layers import to_dtype
from samjax.model.mask_decoder import MaskDecoder
from samjax.model.prompt_chunks import merge_chunks, split_chunks
from samjax.model.prompt_encoder import PromptEncoder
from samjax.model.transformer import project_image_heads


class Sam(nn.Module):
  """Linen module holding the three parts; see ``SamModel`` for the API."""
  config: SamConfig

  def setup(self):
    self.image_encoder = ImageEncoderViT(self.config)
    self.prompt_encoder = PromptEncoder(self.config)
    self.mask_decoder = MaskDecoder(self.config)

  def embed_images(self, images, deterministic: bool = True, channels_last: bool = False):
    """[B, 3, S, S] normalised, padded -> [B, C, S/16, S/16] float32
    ([B, S/16, S/16, C] with ``channels_last``)."""
    x = jnp.transpose(images, (0, 2, 3, 1))
    x = self.image_encoder(x, deterministic).astype(jnp.float32)
    return x if channels_last else jnp.transpose(x, (0, 3, 1, 2))

  def decoder_image_terms(self, embeddings, image_pe=None):
    """The image side of the decoder's first block, the same for every prompt
    of an image that comes without a mask input.

    [B, h, w, C] channels-last embeddings (+ [h, w, C] PE) -> (src =
    embedding + no-mask embedding [B, h*w, C], then the first block's
    projections, head-major [B, H, h*w, d]: token->image keys of src + PE,
    its values of src, image->token queries of src + PE): computed once per
    image instead of once per decode.
    """
    b, g, _, c = embeddings.shape
    pe = self.prompt_encoder
    pe_grid = pe.dense_pe() if image_pe is None else image_pe
    src = (embeddings + pe.no_mask_dense()).reshape(b, g * g, c)
    src_pe = src + pe_grid.reshape(1, g * g, c)
    cfg = self.config
    block = self.variables["params"]["mask_decoder"]["transformer"]["layers_0"]
    heads = partial(project_image_heads, num_heads=cfg.decoder_num_heads,
                    dtype=to_dtype(cfg.dtype))
    k, v = heads(block["cross_attn_token_to_image"], (src_pe, src))
    q, = heads(block["cross_attn_image_to_token"], src_pe, names=("q_proj",))
    return src, k, v, q

  def decode(self, embeddings, point_coords, point_labels, point_valid,
             boxes, box_valid, mask_inputs, mask_valid, image_pe=None,
             channels_last: bool = False, image_terms=None,
             mask_tokens: tuple[int, ...] | None = None,
             mask_grid: tuple[int, int] | None = None):
    """The mask tokens asked for (``mask_tokens``, static; all four by
    default): ([B, M, K, 4h, 4w] logits, [B, M, K] IoU); with ``mask_grid``
    (gh, gw) only the logits' top-left [4gh, 4gw] corner (``MaskDecoder``).

    ``image_pe`` may be passed precomputed (it depends on params only).
    ``channels_last``: ``embeddings`` are [B, h, w, C] (the encoder's own
    layout) instead of the official [B, C, h, w], and ``image_pe`` [h, w, C]
    instead of [C, h, w]. ``image_terms``: ``decoder_image_terms`` of these
    embeddings (prompts without mask inputs only).
    """
    if image_terms is not None:
      # Both preconditions of the cached terms, checked before anything runs.
      if not channels_last:
        raise ValueError("image_terms come from channels-last embeddings: pass "
                         "channels_last=True")
      if mask_inputs is not None:
        raise ValueError("image_terms hold the no-mask embedding: decode prompts "
                         "with mask inputs without them")
    cfg = self.config
    pe = self.prompt_encoder
    c, g = cfg.prompt_embed_dim, cfg.embedding_size
    b = embeddings.shape[0]
    m = _num_prompts(point_coords, boxes, mask_inputs)

    sparse, valid = [], []
    if point_coords is not None:
      sparse.append(pe.embed_points(point_coords.astype(jnp.float32), point_labels))
      valid.append(point_valid)
      # Official: one extra not-a-point token when points come without a box.
      has_points = jnp.any(point_valid, axis=-1)
      has_box = box_valid if boxes is not None else jnp.zeros_like(has_points)
      pad = pe.embed_points(jnp.zeros((b, m, 1, 2), jnp.float32),
                            -jnp.ones((b, m, 1), jnp.int32))
      sparse.append(pad)
      valid.append((has_points & ~has_box)[..., None])
    if boxes is not None:
      sparse.append(pe.embed_boxes(boxes.astype(jnp.float32)))
      valid.append(jnp.broadcast_to(box_valid[..., None], (b, m, 2)))
    if sparse:
      sparse = jnp.concatenate(sparse, axis=2).reshape(b * m, -1, c)
      valid = jnp.concatenate(valid, axis=2).reshape(b * m, -1)
    else:
      sparse = jnp.zeros((b * m, 0, c), jnp.float32)
      valid = jnp.zeros((b * m, 0), bool)

    no_mask = pe.no_mask_dense()
    if mask_inputs is not None:
      s = cfg.mask_input_size
      dense = pe.embed_masks(mask_inputs.reshape(b * m, s, s, 1).astype(jnp.float32))
      dense = jnp.where(mask_valid.reshape(b * m, 1, 1, 1), dense.astype(jnp.float32),
                        no_mask)
    else:
      dense = jnp.broadcast_to(no_mask, (b * m, g, g, c))

    emb = embeddings if channels_last else jnp.transpose(embeddings, (0, 2, 3, 1))
    emb = jnp.broadcast_to(emb[:, None], (b, m, g, g, c)).reshape(b * m, g, g, c)
    emb = constrain(emb, ("batch", None, None, "embed"))
    if image_pe is None:
      pe_grid = pe.dense_pe()
    else:
      want = (g, g, c) if channels_last else (c, g, g)
      if tuple(image_pe.shape) != want:
        raise ValueError(f"image_pe has shape {tuple(image_pe.shape)}, expected {want}: "
                         f"pass dense_pe(params, channels_last={channels_last})")
      # A [C, h, w] table is transposed on every call, a strided read of
      # 4096 x 256 values that costs a CPU click several milliseconds.
      pe_grid = image_pe if channels_last else jnp.transpose(image_pe, (1, 2, 0))
    # image_terms stay one per image: the first two-way block reads them once
    # for all m prompts of an image (no per-prompt copies).
    masks, iou = self.mask_decoder(emb, pe_grid, sparse, valid, dense, image_terms,
                                   mask_tokens, mask_grid)
    k = masks.shape[1]
    return masks.reshape(b, m, k, *masks.shape[2:]), iou.reshape(b, m, k)

  def __call__(self, images, point_coords, point_labels, boxes, mask_inputs):
    """Runs every part once (used by ``init``)."""
    b, m = point_coords.shape[:2]
    emb = self.embed_images(images)
    pv = jnp.ones(point_labels.shape, bool)
    bv = jnp.ones((b, m), bool)
    return self.decode(emb, point_coords, point_labels, pv, boxes, bv, mask_inputs, bv)


def _num_prompts(point_coords, boxes, mask_inputs) -> int:
  for x in (point_coords, boxes, mask_inputs):
    if x is not None:
      return x.shape[1]
  raise ValueError("decode needs at least one of point_coords, boxes, mask_inputs "
                   "(their second axis is the number of prompts per image)")


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
  def embed_images(self, params, images, *, deterministic: bool = True, rngs=None,
                   channels_last: bool = False):
    """images [B, 3, S, S] normalised + padded (official ``preprocess``) -> [B, C, S/16, S/16].

    ``channels_last``: return [B, S/16, S/16, C], the layout ``decode(...,
    channels_last=True)`` reads without a transpose per call.
    """
    return self.module.apply({"params": params}, images, deterministic, channels_last,
                             method=Sam.embed_images, rngs=rngs)

  def decode(self, params, embeddings, point_coords=None, point_labels=None,
             boxes=None, mask_inputs=None, *, point_valid=None, box_valid=None,
             mask_valid=None, multimask_output: bool = True, all_tokens: bool = False,
             image_pe=None, prompt_chunk: int | None = None,
             channels_last: bool = False, image_terms=None,
             mask_grid: tuple[int, int] | None = None, remat_chunks: bool = False):
    """Prompted mask prediction for a batch of images and prompts.

    Args: see the module docstring for shapes; ``*_valid`` default to all True.
      multimask_output: official slicing: tokens 1..3 if True, else token 0
        (only those are decoded past the two-way blocks).
      all_tokens: return all four mask tokens (training uses this).
      image_pe: optional precomputed ``dense_pe(params, channels_last)``
        ([C, h, w], or [h, w, C] with ``channels_last``; saves recomputing
        the 64x64 Fourier features on every call).
      prompt_chunk: decode the M prompts in sequential chunks of this size
        (``lax.map``). Each prompt carries its own copy of the 4096 image
        tokens, so on a CPU a chunk whose working set stays in cache is much
        faster than all M at once; M must be a multiple of it.
      channels_last: ``embeddings`` are [B, h, w, C] (``embed_images(...,
        channels_last=True)``) instead of [B, C, h, w], and ``image_pe`` is
        [h, w, C]: a decode then reads the 4096 image tokens and their
        positional encoding without transposing them on every call (copies
        that cost a CPU click as much as a third of its time).
      image_terms: optional ``decoder_image_terms(params, embeddings,
        image_pe)`` (channels-last only; prompts without mask inputs): the
        first block's image-side sums, computed once per image and reused by
        every decode of it. The masks are the same as without them.
      mask_grid: optional static (gh, gw): return only the top-left
        [4gh, 4gw] corner of the low-res logits, upscaling only those cells
        of the embedding grid (same values; for callers that read only the
        part covered by the resized image).
      remat_chunks: under differentiation, keep only each prompt chunk's
        inputs and recompute its activations in the backward pass
        (``jax.checkpoint`` per chunk; the whole decode when it is one chunk):
        training's decoder memory is then one chunk's activations instead of
        all M prompts' (~0.3 GB per prompt and pass at ViT size, fp32), for
        one more forward pass of the decoder. Same values and gradients.
    Returns:
      (low-res mask logits [B, M, K, 4h, 4w] float32, IoU predictions [B, M, K]).
    """
    if point_coords is not None:
      if point_labels is None:
        raise ValueError("point_coords given without point_labels")
      if point_valid is None:
        point_valid = jnp.ones(point_labels.shape, bool)
    if boxes is not None and box_valid is None:
      box_valid = jnp.ones(boxes.shape[:2], bool)
    if mask_inputs is not None and mask_valid is None:
      mask_valid = jnp.ones(mask_inputs.shape[:2], bool)
    prompts = (point_coords, point_labels, point_valid, boxes, box_valid, mask_inputs,
               mask_valid)

    # Only the returned tokens are decoded past the last two-way block (the
    # official computes all four and slices; same values).
    tokens = self.config.num_mask_tokens
    mask_tokens = None if all_tokens else tuple(range(1, tokens)) if multimask_output else (0,)

    def run(chunk):
      return self.module.apply({"params": params}, embeddings, *chunk, image_pe,
                               channels_last, image_terms, mask_tokens, mask_grid,
                               method=Sam.decode)
    if remat_chunks:
      run = jax.checkpoint(run, prevent_cse=False)
    m = _num_prompts(point_coords, boxes, mask_inputs)
    if prompt_chunk and m > prompt_chunk:
      masks, iou = merge_chunks(jax.lax.map(run, split_chunks(prompts, prompt_chunk)))
    else:
      masks, iou = run(prompts)
    return masks, iou

  def decoder_image_terms(self, params, embeddings, image_pe=None):
    """[B, h, w, C] channels-last embeddings (``embed_images(...,
    channels_last=True)``), optional [h, w, C] ``dense_pe(params,
    channels_last=True)`` -> the per-image terms ``decode(...,
    image_terms=...)`` reuses: (embedding + no-mask embedding [B, h*w, C],
    and the first two-way block's three image-side projections, head-major
    [B, heads, h*w, C/2/heads]); 4 + 3 x 2 MB per ViT image, saving every
    decode of the image three [h*w, C]-sized products and passes over its
    4096 image tokens."""
    return self.module.apply({"params": params}, embeddings, image_pe,
                             method=Sam.decoder_image_terms)

  def dense_pe(self, params, channels_last: bool = False):
    """Image positional encoding [C, h, w] (official ``get_dense_pe()[0]``),
    or [h, w, C] with ``channels_last`` (what ``decode(...,
    channels_last=True)`` reads)."""
    pe = self.module.apply({"params": params},
                           method=lambda mod: mod.prompt_encoder.dense_pe())
    return pe if channels_last else jnp.transpose(pe, (2, 0, 1))

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

"""The interactive plan: decoding many prompts against a few embedded images.

The predictor, the automatic mask generator and ``samjax.segment_anything``
decode through this plan. It computes what ``SamModel.decode`` computes
(tests compare them) from the same parameters, arranged for a per-image
workload where one embedding is decoded again and again:

  - ``prepare`` makes an ``ImageState`` once per image: the channels-last
    embedding, the positional encoding, and the image side of the first
    two-way block (embedding + no-mask embedding, and its three
    projections), which is the same for every prompt without a mask input;
  - ``decode`` runs the factorized decoder (``FactorizedMaskDecoder``) in
    chunks of ``prompt_chunk`` prompts, decoding only the returned mask
    tokens and, with ``mask_grid``, only the part of the logits a caller
    reads.

XLA:CPU rounds a prompt's logits differently depending on its slot within a
chunk (its position in the vectorised loops). ``padded_batch`` and
``lead_slot`` give callers that decode a long list in batches a layout where
every prompt keeps its slot whatever the batch size, so results do not
depend on it bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp

from samjax.decoding.factorized_mask_decoder import channels_last_pe, decode_prompts
from samjax.decoding.factorized_transformer import project_image_heads
from samjax.decoding.prompt_chunks import map_prompt_chunks
from samjax.model.layers import to_dtype
from samjax.model.prompts import Prompts
from samjax.model.sam import SamModel


@flax.struct.dataclass
class ImageState:
  """What the plan keeps per image (b images, C channels, h x w grid, H heads).

  embeddings [b, h, w, C] channels-last; image_pe [h, w, C];
  src [b, h*w, C] = embedding + no-mask embedding;
  first_block [3 x [b, H, h*w, C / 2 / H]]: the first two-way block's
  token->image keys (of src + PE) and values (of src), and its
  image->token queries (of src + PE), head-major.
  """
  embeddings: jax.Array
  image_pe: jax.Array
  src: jax.Array
  first_block: tuple[jax.Array, jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class InteractivePlan:
  """``model``'s decoder run per image; ``prompt_chunk`` prompts per step
  (a cache-sized working set on a CPU: each prompt carries its own copy of
  the 4096 image tokens)."""
  model: SamModel
  prompt_chunk: int = 4

  def image_pe(self, params):
    """[h, w, C] positional encoding (depends on params only: compute once)."""
    return channels_last_pe(self.model, params)

  def prepare(self, params, embeddings, image_pe=None) -> ImageState:
    """[b, C, h, w] embeddings (``SamModel.embed_images``), optional
    ``image_pe(params)`` -> the ``ImageState`` every decode of them reads."""
    cfg = self.model.config
    emb = jnp.transpose(embeddings, (0, 2, 3, 1))
    pe = self.image_pe(params) if image_pe is None else image_pe
    b, h, w, c = emb.shape
    no_mask = self.model.module.apply({"params": params},
                                      method=lambda sam: sam.prompt_encoder.no_mask_dense())
    src = (emb + no_mask).reshape(b, h * w, c)
    src_pe = src + pe.reshape(1, h * w, c)
    # The official parameter layout is a public contract; a rename would
    # fail here with a KeyError and in the plan-equals-model tests.
    block = params["mask_decoder"]["transformer"]["layers_0"]
    heads = dict(num_heads=cfg.decoder_num_heads, dtype=to_dtype(cfg.dtype))
    k, v = project_image_heads(block["cross_attn_token_to_image"], (src_pe, src), **heads)
    q, = project_image_heads(block["cross_attn_image_to_token"], src_pe, names=("q_proj",),
                             **heads)
    return ImageState(emb, pe, src, (k, v, q))

  def decode(self, params, state: ImageState, prompts: Prompts,
             multimask_output: bool = True, *, mask_grid: tuple[int, int] | None = None):
    """``SamModel.decode`` of the state's images: ``Prompts`` [b, M, ...]
    -> (logits [b, M, K, 4h, 4w], IoU [b, M, K]), K = 3 or 1.

    ``mask_grid`` (gh, gw), static: only the top-left [4gh, 4gw] corner of
    the logits (the same values), for callers that read only the part the
    resized image covers."""
    tokens = (1, 2, 3) if multimask_output else (0,)

    def run(chunk: Prompts):
      # The cached first-block terms hold the no-mask embedding: a mask input
      # replaces it, so those prompts are decoded without them.
      terms = (state.src, *state.first_block) if chunk.mask_inputs is None else None
      return decode_prompts(self.model, params, state.embeddings, state.image_pe, chunk,
                            terms, tokens, mask_grid)

    return map_prompt_chunks(run, prompts, self.prompt_chunk)

  def padded_batch(self, batch: int) -> int:
    """Prompts per call that fit ``batch`` prompts starting at any slot
    ``lead_slot`` can give, rounded up to whole chunks (one size for every
    call, so one compiled program). Batches start at multiples of ``batch``,
    so their first slots are the multiples of gcd(batch, chunk) below it."""
    chunk = self.prompt_chunk
    lead = chunk - math.gcd(batch, chunk)
    return -(-(batch + lead) // chunk) * chunk

  def lead_slot(self, start: int) -> int:
    """Where the prompt with index ``start`` of a long list goes in its call,
    so that prompt p always sits in slot p % prompt_chunk of its chunk."""
    return start % self.prompt_chunk


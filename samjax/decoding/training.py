"""The training plan: the decoder passes of the training simulation.

One pass decodes all K masks of a batch (B images x K prompts, all four mask
tokens). The plan chooses
  - the decoder form: ``reference`` (``SamModel.predict_masks``, the paper's
    math) or ``factorized`` (``FactorizedMaskDecoder``: the same values with
    cross-attention re-associated for few prompt tokens). Training uses the
    reference form unless a measurement on the target backend favours the
    other (``samjax plan`` for TPU; docs/planning.md);
  - ``prompt_chunk``: masks per decoder call, looped with ``lax.map``;
  - ``eager_chunk_grads``: each chunk's gradient taken right after its
    forward pass (``eager_grad``), so the decoder holds one chunk's
    activations and recomputes nothing.
Microbatches (gradient accumulation over images) wrap the whole step:
``samjax.train.microbatch``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from samjax.decoding.eager_grad import chunked_sum_eager_grad
from samjax.decoding.factorized_mask_decoder import channels_last_pe, decode_prompts
from samjax.decoding.prompt_chunks import map_prompt_chunks, merge_chunks, split_chunks
from samjax.model.prompts import Prompts
from samjax.model.sam import SamModel

DECODER_FORMS = ("reference", "factorized")


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
  model: SamModel
  decoder_form: str = "reference"
  prompt_chunk: int = 0             # masks per decoder call; 0 = all at once
  eager_chunk_grads: bool = False

  def __post_init__(self):
    if self.decoder_form not in DECODER_FORMS:
      raise ValueError(f"decoder_form={self.decoder_form!r}; expected one of {DECODER_FORMS}")

  def predict_masks(self, params, embeddings, prompts: Prompts):
    """[B, C, h, w] embeddings, ``Prompts`` [B, K, ...] -> all four tokens'
    logits [B, K, 4, 4h, 4w] and IoU [B, K, 4]; ``prompt_chunk`` masks per call."""
    return map_prompt_chunks(lambda chunk: self._decode(params, embeddings, chunk), prompts,
                             self.prompt_chunk)

  def eager_weighted_loss(self, params, embeddings, prompts: Prompts, per_mask, extra,
                          weight):
    """sum over masks of ``weight`` x the per-mask loss, and the per-mask
    outputs, with each prompt chunk's gradient taken in the forward pass.

    ``per_mask(logits, iou, extra)`` -> (parts dict of [B, k] with "loss",
    outputs dict of [B, k, ...]) on any slice of the K masks; ``extra``
    [B, K, ...] its inputs; ``weight`` [B, K]. Returns (scalar, parts,
    outputs). Equal to the sum over ``predict_masks`` up to float summation
    order, values and gradients; ``embeddings`` and the decoder's parameters
    receive gradients, the image encoder's parameters are not read.
    """

    def term(diff, chunk):
      decoder_params, emb = diff
      chunk_prompts, chunk_extra, chunk_weight = chunk
      logits, iou = self._decode(decoder_params, emb, chunk_prompts)
      parts, out = per_mask(logits, iou, chunk_extra)
      return jnp.sum(chunk_weight * parts["loss"]), (parts, out)

    k = prompts.shape[1]
    chunks = split_chunks((prompts, extra, weight), min(self.prompt_chunk or k, k))
    # Differentiating the whole tree would carry the encoder's ~90M zero
    # gradients through every chunk.
    decoder_params = {name: p for name, p in params.items() if name != "image_encoder"}
    total, aux = chunked_sum_eager_grad(term, (decoder_params, embeddings), chunks)
    parts, out = merge_chunks(aux)
    return total, parts, out

  def _decode(self, params, embeddings, prompts: Prompts):
    if self.decoder_form == "reference":
      return self.model.predict_masks(params, embeddings, prompts)
    emb = jnp.transpose(embeddings, (0, 2, 3, 1))
    return decode_prompts(self.model, params, emb, channels_last_pe(self.model, params), prompts)

"""Builds the official ``segment_anything`` model for any ``SamConfig``.

``constructor_kwargs`` is plain JSON (written next to every export);
``build_official_sam`` needs torch + segment_anything and instantiates
``Sam(ImageEncoderViT(...), PromptEncoder(...), MaskDecoder(...))`` with
exactly those arguments, as ``segment_anything.build_sam._build_sam`` does
for the three official sizes.
"""

from __future__ import annotations

from samjax.model.configs import PIXEL_MEAN, PIXEL_STD, SamConfig


def constructor_kwargs(cfg: SamConfig) -> dict:
  g = cfg.embedding_size
  return {
      "image_encoder": {
          "depth": cfg.encoder_depth, "embed_dim": cfg.encoder_embed_dim,
          "img_size": cfg.image_size, "mlp_ratio": cfg.mlp_ratio,
          "norm_layer": "LayerNorm(eps=1e-6)", "num_heads": cfg.encoder_num_heads,
          "patch_size": cfg.patch_size, "qkv_bias": True, "use_rel_pos": True,
          "global_attn_indexes": list(cfg.encoder_global_attn_indexes),
          "window_size": cfg.window_size, "out_chans": cfg.prompt_embed_dim},
      "prompt_encoder": {
          "embed_dim": cfg.prompt_embed_dim, "image_embedding_size": [g, g],
          "input_image_size": [cfg.image_size, cfg.image_size],
          "mask_in_chans": cfg.mask_in_chans},
      "mask_decoder": {
          "num_multimask_outputs": cfg.num_multimask_outputs,
          "transformer": {"depth": cfg.decoder_depth,
                          "embedding_dim": cfg.prompt_embed_dim,
                          "mlp_dim": cfg.decoder_mlp_dim,
                          "num_heads": cfg.decoder_num_heads},
          "transformer_dim": cfg.prompt_embed_dim,
          "iou_head_depth": cfg.iou_head_depth,
          "iou_head_hidden_dim": cfg.iou_head_hidden_dim},
      "pixel_mean": list(PIXEL_MEAN), "pixel_std": list(PIXEL_STD),
  }


def build_official_sam(cfg: SamConfig):
  """An official ``segment_anything.modeling.Sam`` (eval mode) of this size."""
  from functools import partial

  import torch
  from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
  )
  kw = constructor_kwargs(cfg)
  enc = dict(kw["image_encoder"])
  enc["norm_layer"] = partial(torch.nn.LayerNorm, eps=1e-6)
  dec = dict(kw["mask_decoder"])
  dec["transformer"] = TwoWayTransformer(**dec["transformer"])
  pe = dict(kw["prompt_encoder"])
  pe["image_embedding_size"] = tuple(pe["image_embedding_size"])
  pe["input_image_size"] = tuple(pe["input_image_size"])
  sam = Sam(image_encoder=ImageEncoderViT(**enc), prompt_encoder=PromptEncoder(**pe),
            mask_decoder=MaskDecoder(**dec), pixel_mean=kw["pixel_mean"],
            pixel_std=kw["pixel_std"])
  return sam.eval()

"""One table of SAM model variants.

The official release ships ViT-B/L/H (``segment_anything.build_sam``); the
small variants exist so tests and demos run in seconds on a CPU. Every size
the official constructors accept can be described here, so any config can be
exported to a ``.pth`` that the official classes load (see
``samjax.interop.official``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

# Allowed ``SamConfig.remat_policy`` values (see the SamConfig docstring).
REMAT_POLICIES = ("none", "block", "dots_saveable", "offload")

# Pixel statistics of the official model (RGB, 0-255).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class SamConfig:
  """Architecture and compute settings of one SAM model.

  Architecture fields mirror the official constructor arguments
  (``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``,
  ``TwoWayTransformer``). Compute fields (``dtype``, ``attention_impl``,
  ``remat_policy``, ``scan_layers``, ``drop_path_rate``) do not
  change what the parameters are: the ``.pth`` / Hugging Face export is the
  same whatever their values. ``scan_layers`` changes how the encoder blocks
  are laid out in the param tree (and so in train states and orbax
  checkpoints); ``samjax.model.block_stacking`` converts between layouts.

  Encoder memory / compile-time fields:
    remat_policy: what each image-encoder block keeps for the backward pass
      (see ``REMAT_POLICIES``):
        "none"          keep every activation (no rematerialisation);
        "block"         ``jax.checkpoint`` each block saving nothing but its
                        input: the whole block is recomputed in the backward;
        "dots_saveable" save the outputs of the weight matmuls (qkv, proj,
                        lin1, lin2; ``dots_with_no_batch_dims_saveable``) and
                        recompute the rest. Attention score / rel-pos einsums
                        have batch dims and are *not* saved: a global block's
                        scores are [B, heads, 4096, 4096] at 1024px, which is
                        what remat exists to avoid keeping;
        "offload"       as "dots_saveable", but the saved matmul outputs go
                        to pinned host memory
                        (``offload_dot_with_no_batch_dims("device",
                        "pinned_host")``). Meant for backends with host
                        offload (TPU, GPU); on CPU host memory is device
                        memory, so it runs but moves nothing.
    scan_layers: run the encoder blocks with ``jax.lax.scan`` over groups of
      identical blocks (the official layouts repeat "k windowed + 1 global"
      4 times; the k windowed blocks are an inner scan), so the compiled
      graph holds one windowed and one global block whatever the depth.
      The scanned blocks' params are stored stacked
      (``image_encoder/scanned_blocks/run_{k}``, leaves [groups, run length,
      ...]; see ``samjax.model.block_stacking``) instead of ``blocks_0`` ...
      ``blocks_{depth-1}``; layouts with no repeating period fall back to
      the unrolled loop and layout (see ``encoder_scan_period``).
  """

  # Image encoder (ViTDet backbone).
  encoder_embed_dim: int = 768
  encoder_depth: int = 12
  encoder_num_heads: int = 12
  encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
  image_size: int = 1024
  patch_size: int = 16
  window_size: int = 14
  mlp_ratio: float = 4.0
  # Prompt encoder / mask decoder.
  prompt_embed_dim: int = 256
  mask_in_chans: int = 16
  decoder_depth: int = 2
  decoder_mlp_dim: int = 2048
  decoder_num_heads: int = 8
  num_multimask_outputs: int = 3
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256
  # Compute (not part of the checkpoint).
  dtype: str = "float32"
  attention_impl: str = "auto"  # auto | xla | chunked | cudnn
  attention_query_chunk: int = 256
  remat_policy: str = "none"  # none | block | dots_saveable | offload
  scan_layers: bool = False
  drop_path_rate: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "encoder_global_attn_indexes",
                       tuple(int(i) for i in self.encoder_global_attn_indexes))
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size={self.image_size} is not a multiple of "
                       f"patch_size={self.patch_size}")
    if self.encoder_embed_dim % self.encoder_num_heads:
      raise ValueError("encoder_embed_dim must be divisible by encoder_num_heads")
    bad = [i for i in self.encoder_global_attn_indexes
           if not 0 <= i < self.encoder_depth]
    if bad:
      raise ValueError(f"global attention indexes {bad} outside "
                       f"[0, {self.encoder_depth})")
    if self.attention_impl not in ("auto", "xla", "chunked", "cudnn"):
      raise ValueError(f"attention_impl={self.attention_impl!r}; expected "
                       "auto, xla, chunked or cudnn")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"dtype={self.dtype!r}; expected float32/bfloat16/float16")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={self.remat_policy!r}; expected one of "
                       f"{', '.join(REMAT_POLICIES)}")
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"scan_layers={self.scan_layers!r}; expected True or False")

  @property
  def encoder_block_windows(self) -> tuple[int, ...]:
    """Attention window of each encoder block (0 = global attention)."""
    return tuple(0 if i in self.encoder_global_attn_indexes else self.window_size
                 for i in range(self.encoder_depth))

  @property
  def encoder_scan_period(self) -> int | None:
    """Blocks per scanned group, or None when the layout cannot be scanned.

    The smallest period p (dividing the depth, at least 2 groups) with which
    the windowed/global pattern repeats: 3 for ViT-B ([2, 5, 8, 11] -> 4 x
    (2 windowed + 1 global)), 6 for ViT-L, 8 for ViT-H, 2 for ``vit_tiny``.
    Blocks with the same position in their group have identical param shapes
    (windowed and global rel-pos tables differ), so they can be stacked.
    """
    kinds = self.encoder_block_windows
    depth = len(kinds)
    for p in range(1, depth // 2 + 1):
      if depth % p == 0 and all(kinds[i] == kinds[i % p] for i in range(depth)):
        return p
    return None

  @property
  def embedding_size(self) -> int:
    """Side of the image embedding grid (64 for 1024 inputs)."""
    return self.image_size // self.patch_size

  @property
  def mask_input_size(self) -> int:
    """Side of the low-res mask prompt / mask output (256 for 1024 inputs)."""
    return 4 * self.embedding_size

  @property
  def num_mask_tokens(self) -> int:
    return self.num_multimask_outputs + 1

  # Fields that define the parameters (and the official constructor).
  ARCH_FIELDS = (
      "encoder_embed_dim", "encoder_depth", "encoder_num_heads",
      "encoder_global_attn_indexes", "image_size", "patch_size", "window_size",
      "mlp_ratio", "prompt_embed_dim", "mask_in_chans", "decoder_depth",
      "decoder_mlp_dim", "decoder_num_heads", "num_multimask_outputs",
      "iou_head_depth", "iou_head_hidden_dim")

  def arch_dict(self) -> dict:
    d = {f: getattr(self, f) for f in self.ARCH_FIELDS}
    d["encoder_global_attn_indexes"] = list(d["encoder_global_attn_indexes"])
    return d

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["encoder_global_attn_indexes"] = list(d["encoder_global_attn_indexes"])
    return d

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> SamConfig:
    d = dict(d)
    # Model configs saved while SamConfig had the ``remat`` switch (workdirs,
    # model dirs and export sidecars written until remat_policy alone chose
    # the encoder's remat) hold it: True meant "block" unless a policy was set.
    if d.pop("remat", False) and d.get("remat_policy", "none") == "none":
      d["remat_policy"] = "block"
    # Saved configs also hold the decoder form, now a setting of the
    # execution plan (samjax.decoding), not of the model.
    d.pop("decoder_factorized_attention", None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown SamConfig fields: {unknown}")
    return cls(**d)

  def replace(self, **changes) -> SamConfig:
    return dataclasses.replace(self, **changes)

  def same_architecture(self, other: SamConfig) -> bool:
    return self.arch_dict() == other.arch_dict()

  def describe(self) -> str:
    """Human-readable size: the variant name (if any) and the encoder shape."""
    name = variant_name(self)
    desc = (f"embed dim {self.encoder_embed_dim}, depth {self.encoder_depth}, "
            f"{self.encoder_num_heads} heads, global blocks "
            f"{list(self.encoder_global_attn_indexes)}, image size {self.image_size}")
    return f"{name} ({desc})" if name else f"a custom size ({desc})"


VARIANTS = {
    # Official sizes (segment_anything/build_sam.py).
    "vit_b": SamConfig(encoder_embed_dim=768, encoder_depth=12,
                       encoder_num_heads=12,
                       encoder_global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamConfig(encoder_embed_dim=1024, encoder_depth=24,
                       encoder_num_heads=16,
                       encoder_global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamConfig(encoder_embed_dim=1280, encoder_depth=32,
                       encoder_num_heads=16,
                       encoder_global_attn_indexes=(7, 15, 23, 31)),
    # Small variants for tests and CPU demos. Window 7 on a 16x16 grid forces
    # window padding (16 -> 21), the same code path as 64 -> 70 at full size.
    "vit_tiny": SamConfig(encoder_embed_dim=96, encoder_depth=4,
                          encoder_num_heads=3,
                          encoder_global_attn_indexes=(1, 3), image_size=256,
                          window_size=7, prompt_embed_dim=64,
                          decoder_mlp_dim=256, decoder_num_heads=4,
                          iou_head_hidden_dim=64),
    "vit_small": SamConfig(encoder_embed_dim=192, encoder_depth=6,
                           encoder_num_heads=3,
                           encoder_global_attn_indexes=(2, 5), image_size=512,
                           window_size=14, prompt_embed_dim=128,
                           decoder_mlp_dim=512, decoder_num_heads=4,
                           iou_head_hidden_dim=128),
}

OFFICIAL_VARIANTS = ("vit_b", "vit_l", "vit_h")


def get_config(variant: str, **overrides) -> SamConfig:
  """Returns the config of a named variant, with optional field overrides."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
  return VARIANTS[variant].replace(**overrides) if overrides else VARIANTS[variant]


def variant_name(config: SamConfig) -> str | None:
  """Name of the variant with the same architecture, or None."""
  for name, cfg in VARIANTS.items():
    if cfg.same_architecture(config):
      return name
  return None

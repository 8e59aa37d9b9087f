"""Image-encoder initialisation from MAE ViT weights (the SAM paper's starting point).

The official MAE release (facebookresearch/mae) saves ``{"model": state_dict}``
of a timm-style ViT: ``patch_embed.proj``, ``pos_embed`` [1, 1 + n*n, D] (with
a class-token slot), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}``, plus tensors SAM has no place for (``cls_token``, ``norm``,
``mask_token``, the MAE ``decoder_*``, a classification ``head``).

What maps, following ViTDet / SAM:
  blocks.{i}.mlp.fc{1,2}  -> image_encoder.blocks.{i}.mlp.lin{1,2}
  other block tensors     -> the same names under image_encoder.blocks.{i}
  patch_embed.proj        -> image_encoder.patch_embed.proj
  pos_embed               -> class slot dropped, the n x n grid resized to the
                             model's grid with bicubic interpolation
                             (``F.interpolate(..., align_corners=False)``, as
                             ViTDet's ``get_abs_pos``)
What keeps its fresh initialisation: the rel-pos tables, the neck, the prompt
encoder and the mask decoder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from samjax.interop.errors import CheckpointMismatchError
from samjax.interop.param_table import (
  flatten,
  from_torch_layout,
  param_table,
  torch_shape,
  unflatten,
)
from samjax.interop.state_dict import model_shapes
from samjax.model.block_stacking import stack_encoder_blocks
from samjax.model.configs import SamConfig

# MAE tensors that SAM's image encoder has no place for (read, then ignored).
_IGNORED = re.compile(r"^(cls_token|mask_token|norm\.|fc_norm\.|head\.|decoder_|dist_token)")


def _official_key(mae_key: str) -> str:
  """MAE block / patch-embedding key -> official SAM key."""
  key = re.sub(r"\.mlp\.fc([12])\.", r".mlp.lin\1.", mae_key)
  return "image_encoder." + key


def resize_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """MAE ``[1, 1 + n*n, D]`` (or ``[1, n*n, D]``) -> SAM ``[1, H, W, D]``.

  Drops the class-token slot when the token count is 1 + a square, then
  resizes the n x n grid bicubically (PyTorch ``align_corners=False``, the
  interpolation ViTDet uses). The same grid is returned unchanged.
  """
  import torch
  import torch.nn.functional as F

  tokens = pos_embed.shape[1]
  n = math.isqrt(tokens - 1)
  if n * n != tokens - 1:
    n = math.isqrt(tokens)
    if n * n != tokens:
      raise ValueError(f"pos_embed with {tokens} tokens is neither n*n nor 1 + n*n")
  else:
    pos_embed = pos_embed[:, 1:]
  d = pos_embed.shape[-1]
  square = np.asarray(pos_embed, np.float32).reshape(1, n, n, d)
  if (n, n) == tuple(grid):
    return square
  x = torch.from_numpy(square).permute(0, 3, 1, 2)
  x = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False)
  return x.permute(0, 2, 3, 1).numpy()


def encoder_params_from_mae(state_dict: Mapping[str, np.ndarray], config: SamConfig,
                            source: str = "MAE checkpoint") -> tuple[dict, list[str]]:
  """MAE ``{key: array}`` -> (samjax image-encoder params subtree in
  ``config``'s layout, ignored keys).

  Every MAE block / patch-embedding tensor must land on a model parameter of
  the same shape, and every model block must be covered: a depth, width or
  patch-size mismatch raises ``CheckpointMismatchError`` naming the keys.
  """
  rules = {r.torch_key: r for r in param_table(config)
           if r.torch_key.startswith("image_encoder.")}
  shapes = model_shapes(config)

  flat, ignored, unexpected, mismatched = {}, [], [], []
  for key, value in state_dict.items():
    if _IGNORED.match(key):
      ignored.append(key)
      continue
    if key == "pos_embed":
      grid = shapes[("image_encoder", "pos_embed")][1:3]
      if np.shape(value)[-1] != config.encoder_embed_dim:
        mismatched.append((key, tuple(np.shape(value)),
                           (1, "1+n*n", config.encoder_embed_dim)))
        continue
      flat[("image_encoder", "pos_embed")] = resize_pos_embed(np.asarray(value), grid)
      continue
    rule = rules.get(_official_key(key))
    if rule is None:
      unexpected.append(key)
      continue
    want = torch_shape(rule, shapes[rule.jax_path])
    if tuple(np.shape(value)) != want:
      mismatched.append((key, tuple(np.shape(value)), want))
      continue
    flat[rule.jax_path] = from_torch_layout(rule, value).astype(np.float32)

  # Every block tensor and the patch embedding must come from the checkpoint.
  required = [k for k in rules
              if (".blocks." in k and ".rel_pos_" not in k) or ".patch_embed." in k]
  covered = {"/".join(p) for p in flat}
  missing = [k for k in required if "/".join(rules[k].jax_path) not in covered]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(
        source, missing, unexpected, mismatched,
        hint=(f"expected an MAE ViT with depth {config.encoder_depth}, width "
              f"{config.encoder_embed_dim} and {config.patch_size}px patches"))
  # In the layout of ``config`` (blocks stacked when it scans), so that
  # ``apply_mae`` merges it into that model's params path by path.
  return stack_encoder_blocks(unflatten(flat), config)["image_encoder"], ignored


def apply_mae(params, mae_encoder: dict) -> dict:
  """Copy of ``params`` with the MAE-provided image-encoder leaves replaced.

  ``mae_encoder`` comes from ``encoder_params_from_mae`` for the same config,
  which has already checked every shape.
  """
  flat = flatten(params)
  flat.update(flatten({"image_encoder": mae_encoder}))
  return unflatten(flat)

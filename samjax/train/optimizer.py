"""AdamW with SAM's recipe: decay mask, layer-wise lr decay, warmup + step decay.

Per-parameter learning-rate multipliers (layer decay, frozen buffers) are
applied by ``scale_by_tree`` (per-block arrays for leaves of stacked encoder
blocks); the schedule is linear warmup then a factor (0.1) at each decay
step, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samjax.model.block_stacking import SCANNED, block_runs
from samjax.model.configs import SamConfig

# Buffers of the official model that live in params here: never trained.
FROZEN = ("positional_encoding_gaussian_matrix",)
NO_DECAY_NAMES = ("bias", "scale", "embedding", "pos_embed", "rel_pos_h", "rel_pos_w",
                  "positional_encoding_gaussian_matrix")


def _names(path) -> tuple:
  return tuple(getattr(p, "key", getattr(p, "name", str(p))) for p in path)


def decay_mask(params):
  """True for matmul/conv kernels, False for norms, biases, embeddings, tables."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _names(path)[-1] not in NO_DECAY_NAMES, params)


def layer_id(names: Sequence[str], config: SamConfig) -> int | np.ndarray:
  """ViT layer index of a param: 0 stem, 1..depth blocks, depth + 1 the rest.

  A stacked leaf (``image_encoder/scanned_blocks/run_k``, see
  ``samjax.model.block_stacking``) holds several blocks: its layer index is
  an int array over the stacked dims ([G, L] or [G]), one entry per block.
  """
  if names[0] == "image_encoder":
    if names[1] in ("patch_embed", "pos_embed"):
      return 0
    if names[1].startswith("blocks_"):
      return int(names[1].split("_")[1]) + 1
    if names[1] == SCANNED:
      runs = {run.name: run for run in block_runs(config)}
      return runs[names[2]].block_index + 1
  return config.encoder_depth + 1


def _frozen(names, image_encoder_lr_scale: float) -> bool:
  return names[-1] in FROZEN or (names[0] == "image_encoder" and image_encoder_lr_scale == 0)


def trainable_mask(params, image_encoder_lr_scale: float = 1.0):
  """1.0 for trained params, 0.0 for frozen buffers and, with
  ``image_encoder_lr_scale`` 0, the frozen image encoder (pytree of floats)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 0.0 if _frozen(_names(path), image_encoder_lr_scale) else 1.0, params)


def lr_multipliers(params, config: SamConfig, layer_decay: float,
                   image_encoder_lr_scale: float = 1.0):
  """Pytree of per-param lr multipliers: layer_decay ** (depth + 1 - layer),
  times ``image_encoder_lr_scale`` inside the image encoder (fine-tuning:
  a lower encoder lr, or 0 to freeze it).

  A float per leaf; for a stacked leaf [*S, ...] of several encoder blocks a
  float64 array [*S, 1, ...] (broadcasts against the leaf) holding each
  block's own multiplier, the same number as its per-block leaf would get.
  """
  depth = config.encoder_depth

  def block_mult(layer: int, names) -> float:
    m = float(layer_decay ** (depth + 1 - layer))
    return m * image_encoder_lr_scale if names[0] == "image_encoder" else m

  def mult(path, leaf):
    names = _names(path)
    if _frozen(names, image_encoder_lr_scale):
      return 0.0
    layer = layer_id(names, config)
    if isinstance(layer, int):
      return block_mult(layer, names)
    # Python floats block by block, as the per-block leaves get them.
    m = np.array([block_mult(int(i), names) for i in layer.ravel()])
    return m.reshape(layer.shape + (1,) * (len(leaf.shape) - layer.ndim))
  return jax.tree_util.tree_map_with_path(mult, params)


class ScaleByTreeState(NamedTuple):
  pass


def scale_by_tree(multipliers) -> optax.GradientTransformation:
  """Multiplies each update by a constant from a pytree of floats (or of
  arrays that broadcast against their leaves)."""
  def init(params):
    del params
    return ScaleByTreeState()

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda u, m: u * jnp.asarray(m, u.dtype),
                                  updates, multipliers), state
  return optax.GradientTransformation(init, update)


def make_schedule(lr: float, warmup_steps: int, decay_steps: Sequence[int],
                  decay_factor: float = 0.1):
  """Linear warmup (the first update already uses lr / warmup_steps), then
  the lr is multiplied by ``decay_factor`` once each ``decay_steps`` is passed."""
  warmup = max(int(warmup_steps), 1)
  steps = tuple(int(s) for s in decay_steps)

  def schedule(count):
    count = jnp.asarray(count)
    warm = lr * jnp.minimum((count + 1) / warmup, 1.0)
    n_decays = sum((count >= s).astype(jnp.float32) for s in steps) if steps else 0.0
    return warm * decay_factor ** n_decays
  return schedule


def make_optimizer(params, config: SamConfig, *, lr: float, warmup_steps: int,
                   decay_steps: Sequence[int] = (), decay_factor: float = 0.1,
                   b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.1,
                   layer_decay: float = 1.0, grad_clip: float = 0.0,
                   image_encoder_lr_scale: float = 1.0):
  """(optax transformation, lr schedule). ``params`` fixes the tree structure.

  ``image_encoder_lr_scale``: the image encoder's lr relative to the rest;
  0 freezes it (its gradients are dropped before clipping and Adam, its
  weights get no decay: they stay exactly as loaded)."""
  if image_encoder_lr_scale < 0:
    raise ValueError(f"image_encoder_lr_scale must be >= 0, got {image_encoder_lr_scale}")
  schedule = make_schedule(lr, warmup_steps, decay_steps, decay_factor)
  # Frozen buffers' gradients are dropped first: the Fourier PE matrix gets
  # gradients orders of magnitude larger than everything else, which would
  # otherwise dominate the clipping norm (and Adam's statistics).
  parts = [scale_by_tree(trainable_mask(params, image_encoder_lr_scale))]
  if grad_clip and grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts += [
      optax.scale_by_adam(b1=b1, b2=b2),
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      scale_by_tree(lr_multipliers(params, config, layer_decay, image_encoder_lr_scale)),
      optax.scale_by_learning_rate(schedule),
  ]
  return optax.chain(*parts), schedule

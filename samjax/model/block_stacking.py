"""The stacked layout of the image-encoder blocks (``scan_layers``), and the
conversion to and from the per-block layout.

Per-block layout (the official one; ``scan_layers=False``, or a layout with
no repeating period): ``image_encoder/blocks_{i}/...`` for i < depth.

Stacked layout (``uses_stacked_blocks(cfg)``): the encoder is G = depth / p
groups of p = ``encoder_scan_period`` blocks. Inside a group, consecutive
blocks of the same kind (windowed or global: their rel-pos tables differ in
length) form a run; run k starts at position ``start`` of the group and holds
``length`` blocks. Its params live under
``image_encoder/scanned_blocks/run_{k}/...`` (the names under it are a
block's: ``norm1``, ``attn/qkv``, ...) with leading dims

  [G, length, ...]  when length > 1: leaf[g, l] is block g * p + start + l;
  [G, ...]          when length == 1: leaf[g] is block g * p + start.

ViT-B (p = 3, G = 4): run_0 = the 2 windowed blocks of each group (blocks
0, 1, 3, 4, 6, 7, 9, 10 as [4, 2, ...]), run_1 = the global blocks (2, 5,
8, 11 as [4, ...]). The scanned forward pass (``ImageEncoderViT``) reads
these leaves directly: a ``lax.scan`` over G whose body scans each run.

``stack_encoder_blocks`` / ``unstack_encoder_blocks`` convert between the two
layouts (bit-exact: only copies); both are the identity for a config that
keeps the per-block layout, so callers convert unconditionally.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samjax.model.configs import SamConfig

SCANNED = "scanned_blocks"  # the image encoder's subtree of stacked runs


@dataclasses.dataclass(frozen=True)
class Run:
  """Consecutive same-kind blocks of a scan group, stacked into one subtree."""
  name: str      # run_{k}
  start: int     # position of its first block in the group
  length: int    # blocks per group
  window: int    # attention window of its blocks (0 = global)
  groups: int    # G
  period: int    # p

  @property
  def block_index(self) -> np.ndarray:
    """Encoder block index of each stacked slot: int [G, length] ([G] if length 1)."""
    idx = (np.arange(self.groups)[:, None] * self.period + self.start
           + np.arange(self.length)[None, :])
    return idx[:, 0] if self.length == 1 else idx


def uses_stacked_blocks(cfg: SamConfig) -> bool:
  """Whether ``cfg``'s params hold the encoder blocks stacked (and scanned)."""
  return cfg.scan_layers and cfg.encoder_scan_period is not None


def block_runs(cfg: SamConfig) -> tuple[Run, ...]:
  """The runs of one scan group, in block order (``cfg`` must scan)."""
  period = cfg.encoder_scan_period
  groups = cfg.encoder_depth // period
  spans = []  # [start, length, window]
  for j, window in enumerate(cfg.encoder_block_windows[:period]):
    if spans and spans[-1][2] == window:
      spans[-1][1] += 1
    else:
      spans.append([j, 1, window])
  return tuple(Run(f"run_{k}", start, length, window, groups, period)
               for k, (start, length, window) in enumerate(spans))


def _stack(leaves, lead: tuple[int, ...]):
  """Stacks one leaf of every block of a run into [*lead, ...]; numpy stays numpy."""
  xp = np if all(isinstance(a, np.ndarray) for a in leaves) else jnp
  return xp.stack(leaves).reshape(lead + np.shape(leaves[0]))


def stack_encoder_blocks(params: dict, cfg: SamConfig) -> dict:
  """Per-block params -> the layout of ``cfg`` (a copy; identity if it does not stack).

  Also takes a partial tree (e.g. block tensors without rel-pos tables) as
  long as the blocks of each run hold the same leaves.
  """
  if not uses_stacked_blocks(cfg):
    return params
  encoder = dict(params["image_encoder"])
  runs = {}
  for run in block_runs(cfg):
    idx = run.block_index
    blocks = [encoder.pop(f"blocks_{i}") for i in idx.ravel()]
    runs[run.name] = jax.tree.map(lambda *leaves, lead=idx.shape: _stack(leaves, lead),
                                  *blocks)
  encoder[SCANNED] = runs
  return {**params, "image_encoder": encoder}


def unstack_encoder_blocks(params: dict, cfg: SamConfig) -> dict:
  """Params in ``cfg``'s layout -> per-block params (slices of the stacked leaves)."""
  if not uses_stacked_blocks(cfg):
    return params
  encoder = dict(params["image_encoder"])
  if SCANNED not in encoder:
    raise ValueError(f"params have no image_encoder/{SCANNED}: not the stacked layout "
                     f"that scan_layers=True gives {cfg.describe()}")
  runs = encoder.pop(SCANNED)
  for run in block_runs(cfg):
    for pos, i in np.ndenumerate(run.block_index):
      encoder[f"blocks_{i}"] = jax.tree.map(lambda a, pos=pos: a[pos], runs[run.name])
  return {**params, "image_encoder": encoder}


def convert_block_layout(params: dict, source: SamConfig, target: SamConfig) -> dict:
  """Params in ``source``'s layout -> ``target``'s (same architecture; e.g. a
  checkpoint trained without ``scan_layers`` loaded into a scanning model)."""
  if uses_stacked_blocks(source) == uses_stacked_blocks(target):
    return params
  return stack_encoder_blocks(unstack_encoder_blocks(params, source), target)

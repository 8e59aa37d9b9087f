"""A batch of prompts: B images, M prompts per image, N point slots per prompt.

Every field is optional; a prompt may combine points, a box and a mask.
Validity masks make fixed shapes exact: a padding slot (point, box or mask)
changes nothing, so a padded batch gives each prompt the official result.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Prompts:
  """Prompts in the padded model-input frame (e.g. 0..1024).

  point_coords [B, M, N, 2] (x, y), point_labels [B, M, N] (1 foreground,
  0 background, -1 official "not a point"), point_valid [B, M, N] bool;
  boxes [B, M, 4] (x0, y0, x1, y1), box_valid [B, M];
  mask_inputs [B, M, 4h, 4w] low-res logits, mask_valid [B, M].
  Build with ``Prompts.create``, which fills the validity masks.
  """
  point_coords: jax.Array | None = None
  point_labels: jax.Array | None = None
  point_valid: jax.Array | None = None
  boxes: jax.Array | None = None
  box_valid: jax.Array | None = None
  mask_inputs: jax.Array | None = None
  mask_valid: jax.Array | None = None

  @classmethod
  def create(cls, point_coords=None, point_labels=None, boxes=None, mask_inputs=None, *,
             point_valid=None, box_valid=None, mask_valid=None) -> Prompts:
    """Any of points (coords + labels), boxes, mask inputs; each ``*_valid``
    defaults to all True for the prompts given."""
    if (point_coords is None) != (point_labels is None):
      raise ValueError("point_coords and point_labels come together")
    if point_coords is None and boxes is None and mask_inputs is None:
      raise ValueError("a prompt needs points, boxes or mask inputs")
    if point_coords is not None and point_valid is None:
      point_valid = jnp.ones(jnp.shape(point_labels), bool)
    if boxes is not None and box_valid is None:
      box_valid = jnp.ones(jnp.shape(boxes)[:2], bool)
    if mask_inputs is not None and mask_valid is None:
      mask_valid = jnp.ones(jnp.shape(mask_inputs)[:2], bool)
    return cls(point_coords, point_labels, point_valid, boxes, box_valid,
               mask_inputs, mask_valid)

  @property
  def shape(self) -> tuple[int, int]:
    """(B images, M prompts per image)."""
    for x in (self.point_coords, self.boxes, self.mask_inputs):
      if x is not None:
        return tuple(x.shape[:2])
    raise ValueError("empty Prompts: build them with Prompts.create")

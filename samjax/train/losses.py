"""SAM's training losses (paper section 3 / appendix A).

Mask loss = ``focal_weight`` * sigmoid focal loss + ``dice_weight`` * dice loss
(20 : 1 in the paper), IoU-head loss = MSE between predicted and actual IoU
(weight ``iou_weight``, 1 in the paper). With several (ambiguity-aware)
outputs only the output with the lowest mask loss receives mask gradient.
All math in float32. ``sam_loss`` puts these together per mask; every
decoder pass of training and evaluation (``samjax.train.interactive``) is
scored by it.

Shapes: logits / targets [..., G, G]; per-mask losses reduce the last two axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
  """Mean over pixels of the sigmoid focal loss (RetinaNet / DETR form): [...]."""
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  p_t = p * targets + (1 - p) * (1 - targets)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
  return loss.mean(axis=(-2, -1))


def dice_loss(logits, targets, smooth: float = 1.0):
  """1 - (2|P.T| + s) / (|P| + |T| + s) with P = sigmoid(logits): [...]."""
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  t = targets.astype(jnp.float32)
  inter = (p * t).sum(axis=(-2, -1))
  return 1.0 - (2.0 * inter + smooth) / (p.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1)) + smooth)


def mask_iou(logits, targets):
  """IoU of the thresholded prediction (logits > 0) with the target: [...]."""
  pred = logits > 0
  t = targets > 0.5
  inter = jnp.sum(pred & t, axis=(-2, -1)).astype(jnp.float32)
  union = jnp.sum(pred | t, axis=(-2, -1)).astype(jnp.float32)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def sam_loss(logits, iou_pred, targets, *, focal_weight: float, dice_weight: float,
             iou_weight: float):
  """SAM's loss of one decoder pass, per mask: the one loss training optimises.

  Mask loss ``focal_weight * focal + dice_weight * dice`` of the output with
  the lowest mask loss (only it gets mask gradient), plus ``iou_weight`` x
  the IoU head's MSE against every output's actual IoU.

  Args:
    logits: [B, K, T, G, G] mask logits for T outputs (T = 3 multimask or 1).
    iou_pred: [B, K, T] predicted IoU.
    targets: [B, K, G, G] {0, 1} ground truth.
  Returns:
    dict of [B, K] float32 arrays: ``loss`` (the per-mask total above),
    ``mask`` (= focal_weight * focal + dice_weight * dice), ``focal`` and
    ``dice`` of the best output, ``iou_mse`` over all T outputs and ``iou``
    (actual IoU of the best output); and ``best`` [B, K], the output that
    gets the mask gradient. Average ``loss`` over valid masks with
    ``masked_mean``.
  """
  t = targets[:, :, None]
  focal = sigmoid_focal_loss(logits, t)                 # [B, K, T]
  dice = dice_loss(logits, t)
  per_output = focal_weight * focal + dice_weight * dice
  best = jnp.argmin(per_output, axis=-1)                # min over multimask outputs
  pick = lambda x: jnp.take_along_axis(x, best[..., None], axis=-1)[..., 0]
  actual_iou = jax.lax.stop_gradient(mask_iou(logits, t))
  # Every output's IoU prediction is supervised (it ranks masks at inference).
  iou_mse = jnp.mean((iou_pred.astype(jnp.float32) - actual_iou) ** 2, axis=-1)
  mask = pick(per_output)
  return {"loss": mask + iou_weight * iou_mse, "mask": mask, "focal": pick(focal),
          "dice": pick(dice), "iou_mse": iou_mse, "iou": pick(actual_iou)}, best


def masked_mean(x, valid):
  """Mean of [B, K] values over valid masks (0 if none)."""
  w = valid.astype(jnp.float32)
  return jnp.sum(x * w) / jnp.maximum(w.sum(), 1.0)

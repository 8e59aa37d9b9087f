"""SAM losses against values computed by hand."""

import jax.numpy as jnp
import numpy as np

from samjax.train.losses import dice_loss, mask_iou, masked_mean, sam_loss, sigmoid_focal_loss

PAPER = {"focal_weight": 20.0, "dice_weight": 1.0, "iou_weight": 1.0}  # SAM appendix A


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_focal_loss_hand_computed():
  logits = np.array([[2.0, -1.0], [0.5, -3.0]], np.float32)
  targets = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  p = _sigmoid(logits)
  # alpha=0.25, gamma=2: positives weight 0.25 * (1-p)^2 * -log p; negatives 0.75 p^2 * -log(1-p)
  expected = np.mean([0.25 * (1 - p[0, 0]) ** 2 * -np.log(p[0, 0]),
                      0.75 * p[0, 1] ** 2 * -np.log(1 - p[0, 1]),
                      0.75 * p[1, 0] ** 2 * -np.log(1 - p[1, 0]),
                      0.25 * (1 - p[1, 1]) ** 2 * -np.log(p[1, 1])])
  np.testing.assert_allclose(sigmoid_focal_loss(logits, targets), expected, rtol=1e-5)


def test_dice_loss_hand_computed():
  logits = np.array([[0.0, 10.0], [-10.0, 0.0]], np.float32)
  targets = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
  p = _sigmoid(logits)
  inter = p[0, 0] + p[0, 1]
  expected = 1 - (2 * inter + 1) / (p.sum() + 2 + 1)
  np.testing.assert_allclose(dice_loss(logits, targets), expected, rtol=1e-5)


def test_mask_iou():
  logits = np.array([[1.0, 1.0], [-1.0, 1.0]], np.float32)
  targets = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  np.testing.assert_allclose(mask_iou(logits, targets), 2 / 3, rtol=1e-6)
  assert float(mask_iou(-np.ones((2, 2)), np.zeros((2, 2)))) == 1.0  # empty vs empty


def test_min_over_multimask_picks_lowest_loss_output():
  g = 8
  target = np.zeros((1, 1, g, g), np.float32)
  target[0, 0, 2:6, 2:6] = 1
  good = np.where(target[0, 0] > 0, 8.0, -8.0)
  bad = -good
  mid = np.zeros((g, g))
  logits = np.stack([bad, mid, good])[None, None].astype(np.float32)   # [1, 1, 3, g, g]
  iou_pred = np.array([[[0.1, 0.5, 0.9]]], np.float32)
  parts, best = sam_loss(logits, iou_pred, target, **PAPER)
  assert int(best[0, 0]) == 2
  single, _ = sam_loss(logits[:, :, 2:], iou_pred[:, :, 2:], target, **PAPER)
  np.testing.assert_allclose(parts["mask"], single["mask"], rtol=1e-6)
  # Gradient flows only into the chosen output's logits.
  import jax
  grad = jax.grad(lambda x: sam_loss(x, iou_pred, target, **PAPER)[0]["mask"].sum())(
      jnp.asarray(logits))
  assert float(jnp.abs(grad[0, 0, 0]).sum()) == 0.0
  assert float(jnp.abs(grad[0, 0, 1]).sum()) == 0.0
  assert float(jnp.abs(grad[0, 0, 2]).sum()) > 0.0
  # IoU head: MSE against each output's actual IoU (0, 0, 1: zero logits predict nothing).
  actual = np.array([0.0, 0.0, 1.0])
  np.testing.assert_allclose(parts["iou_mse"], np.mean((iou_pred[0, 0] - actual) ** 2),
                             rtol=1e-5)


def test_sam_loss_weights_and_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (2, 3, 1, 8, 8)).astype(np.float32)
  targets = (rng.uniform(size=(2, 3, 8, 8)) > 0.5).astype(np.float32)
  iou_pred = rng.uniform(size=(2, 3, 1)).astype(np.float32)
  valid = np.array([[True, True, False], [True, False, False]])
  f = np.asarray(sigmoid_focal_loss(logits[:, :, 0], targets))
  d = np.asarray(dice_loss(logits[:, :, 0], targets))
  i = (iou_pred[:, :, 0] - np.asarray(mask_iou(logits[:, :, 0], targets))) ** 2
  for weights in (PAPER, {"focal_weight": 3.0, "dice_weight": 0.5, "iou_weight": 2.0}):
    parts, _ = sam_loss(logits, iou_pred, targets, **weights)
    per = weights["focal_weight"] * f + weights["dice_weight"] * d + weights["iou_weight"] * i
    np.testing.assert_allclose(parts["loss"], per, rtol=1e-5)
    np.testing.assert_allclose(parts["mask"], per - weights["iou_weight"] * i, rtol=1e-5)
  loss = masked_mean(sam_loss(logits, iou_pred, targets, **PAPER)[0]["loss"], valid)
  np.testing.assert_allclose(loss, (20 * f + d + i)[valid].mean(), rtol=1e-5)
  # Garbage in padded slots changes nothing.
  logits2 = logits.copy()
  logits2[~valid] = 100.0
  loss2 = masked_mean(sam_loss(logits2, iou_pred, targets, **PAPER)[0]["loss"], valid)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  assert float(masked_mean(np.ones((2, 3)), np.zeros((2, 3), bool))) == 0.0  # no valid mask

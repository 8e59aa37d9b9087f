"""Prompt simulation: clicks come from the error region, boxes are noisy GT boxes,
and the schedule has the configured number of passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.train import prompt_sampling
from samjax.train.interactive import InteractiveConfig, followup_schedule


def _masks(rng, b, k, g):
  gt = np.zeros((b, k, g, g), np.float32)
  pred = np.full((b, k, g, g), -1.0, np.float32)
  for i in range(b):
    for j in range(k):
      y, x = rng.integers(0, g // 2, 2)
      gt[i, j, y:y + g // 3, x:x + g // 3] = 1
      y, x = rng.integers(0, g // 2, 2)
      pred[i, j, y:y + g // 4, x:x + g // 2] = 1.0
  return gt, pred


def test_corrective_clicks_come_from_the_error_region_with_right_labels():
  rng = np.random.default_rng(0)
  g, s = 32, 128
  gt, pred = _masks(rng, 4, 6, g)
  for seed in range(20):
    xy, label, found = prompt_sampling.error_region_point(jax.random.PRNGKey(seed),
                                                          pred, gt, s)
    xy, label, found = map(np.asarray, (xy, label, found))
    assert found.all()
    col = np.floor(xy[..., 0] / (s / g)).astype(int)
    row = np.floor(xy[..., 1] / (s / g)).astype(int)
    b_idx, k_idx = np.meshgrid(range(4), range(6), indexing="ij")
    at_gt = gt[b_idx, k_idx, row, col] > 0.5
    at_pred = pred[b_idx, k_idx, row, col] > 0
    assert (at_gt != at_pred).all()                    # inside the error region
    np.testing.assert_array_equal(label, at_gt.astype(int))  # FN -> 1, FP -> 0


def test_no_error_means_no_click():
  gt = np.zeros((1, 1, 8, 8), np.float32)
  gt[0, 0, 2:4, 2:4] = 1
  _, _, found = prompt_sampling.error_region_point(jax.random.PRNGKey(0), gt * 2 - 1, gt, 32)
  assert not bool(found[0, 0])


def test_first_points_are_uniform_over_the_foreground():
  g = 16
  region = np.zeros((1, 1, g, g), bool)
  region[0, 0, 4:8, 10:12] = True
  counts = np.zeros((g, g))
  for seed in range(400):
    xy, found = prompt_sampling.sample_uniform_pixel(jax.random.PRNGKey(seed), region, g)
    assert bool(found[0, 0])
    x, y = np.asarray(xy[0, 0])
    counts[int(y), int(x)] += 1
  assert counts[~region[0, 0]].sum() == 0
  inside = counts[region[0, 0]]
  assert inside.min() > 10  # every one of the 8 pixels is hit (~50 expected)


def test_noisy_boxes_stay_near_gt_and_in_the_image():
  boxes = jnp.tile(jnp.array([[100.0, 50.0, 300.0, 150.0]]), (1, 200, 1))[None, 0]
  image_hw = jnp.array([[400, 500]])
  noisy = np.asarray(prompt_sampling.noisy_boxes(jax.random.PRNGKey(0), boxes[None][0],
                                                 image_hw))
  delta = noisy - np.asarray(boxes)
  # std = min(10% of side, 20 px): x sides 200 -> 20, y sides 100 -> 10.
  assert 12 < delta[..., 0].std() < 28 and 6 < delta[..., 1].std() < 14
  assert (noisy[..., 2] >= noisy[..., 0]).all() and (noisy >= 0).all()
  assert (noisy[..., [0, 2]] <= 500).all() and (noisy[..., [1, 3]] <= 400).all()


@pytest.mark.parametrize("points, mask_only", [(8, 2), (3, 1), (2, 0)])
def test_schedule_counts(points, mask_only):
  cfg = InteractiveConfig(num_point_iters=points, num_mask_only_iters=mask_only)
  seen_positions = set()
  for seed in range(30):
    sched = np.asarray(followup_schedule(jax.random.PRNGKey(seed), cfg))
    assert len(sched) == points + mask_only
    assert sched.sum() == points
    if mask_only >= 1:
      assert not sched[-1]                   # one mask-only pass is the last
    if mask_only == 2:
      seen_positions.add(int(np.flatnonzero(~sched[:-1])[0]))
  if mask_only == 2:
    assert len(seen_positions) > 3           # the other one moves around


@pytest.fixture(scope="module")
def small_simulation():
  """A cut-down vit_tiny (2 encoder blocks, one decoder layer: the passes are
  what the variants below change, and the compiles take half the time), a
  batch of 2 images x 3 masks, and the plain loss and gradients every
  memory-saving variant must reproduce."""
  from samjax.decoding.training import TrainingPlan
  from samjax.model import build
  from samjax.train.interactive import simulate
  model = build("vit_tiny", image_size=64, encoder_depth=2, encoder_global_attn_indexes=(1,),
                decoder_depth=1)
  params = model.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  g = model.config.mask_input_size
  gt, _ = _masks(rng, 2, 3, g)
  batch = {"masks": gt.astype(np.uint8), "valid": np.ones((2, 3), bool),
           "boxes": np.tile(np.array([4.0, 4.0, 40.0, 40.0], np.float32), (2, 3, 1)),
           "image_size": np.full((2, 2), 64, np.int32)}
  images = jax.random.uniform(jax.random.PRNGKey(2), (2, 3, 64, 64))

  def run(p, cfg, prompt_chunk=None, batch=batch, form="reference"):
    emb = model.embed_images(p, images)
    plan = TrainingPlan(model, form, prompt_chunk or 0, cfg.eager_chunk_grads)
    return simulate(plan, p, emb, batch, jax.random.PRNGKey(3), cfg)

  def loss(p, cfg, prompt_chunk=None, batch=batch, form="reference"):
    return run(p, cfg, prompt_chunk, batch, form)[0]

  plain = InteractiveConfig(num_point_iters=2, num_mask_only_iters=1)
  v0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(p, plain)))(params)
  return {"params": params, "batch": batch, "run": run, "loss": loss, "plain": plain,
          "v0": v0, "g0": g0}


def test_eager_chunk_grads_give_the_same_loss_gradients_and_metrics(small_simulation):
  """``eager_chunk_grads`` takes each prompt chunk's gradient in the forward
  pass: same loss, gradients and metrics as the plain program (with masks
  that do not count, so the per-mask weights matter), and no decoder forward
  pass recomputed (its FLOPs are the plain program's)."""
  from samjax.planning.flops import count_flops
  params, run = small_simulation["params"], small_simulation["run"]
  plain = small_simulation["plain"]
  batch = {**small_simulation["batch"], "valid": np.array([[True, True, False],
                                                          [True, False, False]])}
  eager = InteractiveConfig(num_point_iters=2, num_mask_only_iters=1, eager_chunk_grads=True)

  def value_and_grad(cfg, chunk):
    return jax.jit(jax.value_and_grad(lambda p: run(p, cfg, chunk, batch), has_aux=True))

  (v0, m0), g0 = value_and_grad(plain, None)(params)
  (v1, m1), g1 = value_and_grad(eager, 1)(params)
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
  for name in m0:
    np.testing.assert_allclose(np.asarray(m1[name]), np.asarray(m0[name]), rtol=1e-5,
                               atol=1e-7, err_msg=name)
  # Not differentiated (the eval step): the plain per-chunk map, same values.
  v2, m2 = jax.jit(lambda p: run(p, eager, 1, batch))(params)
  np.testing.assert_allclose(float(v2), float(v0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m2["iou_per_pass"]), np.asarray(m0["iou_per_pass"]),
                             rtol=1e-5)
  leaves0 = jax.tree_util.tree_leaves_with_path(g0)
  assert sum(float(jnp.abs(g).sum()) > 0 for _, g in leaves0) > len(leaves0) // 2
  for (path, a), b in zip(leaves0, jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))

  def flops(cfg, chunk):
    return count_flops(jax.grad(lambda p: run(p, cfg, chunk, batch)[0]), params).total
  assert flops(eager, 1) == pytest.approx(flops(plain, None), rel=0.02)

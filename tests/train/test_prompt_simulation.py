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


def test_remat_of_the_passes_changes_nothing():
  """``remat_passes`` recomputes the follow-up passes in the backward pass,
  ``remat_prompt_chunks`` every decoder call per prompt chunk: same loss,
  same gradients, only memory differs."""
  from samjax.model import build
  from samjax.train.interactive import simulate
  # vit_tiny cut down (2 encoder blocks, one decoder layer): the passes are
  # what is rematerialised, and the two compiles take half the time.
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

  def loss(p, cfg):
    emb = model.embed_images(p, images)
    return simulate(model, p, emb, batch, jax.random.PRNGKey(3), cfg)[0]

  plain = InteractiveConfig(num_point_iters=2, num_mask_only_iters=1)
  remat = InteractiveConfig(num_point_iters=2, num_mask_only_iters=1, remat_passes=True)
  v0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(p, plain)))(params)
  v1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(p, remat)))(params)
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  # The recompute is really there (a checkpoint primitive in the program).
  assert "remat" in str(jax.make_jaxpr(lambda p: loss(p, remat))(params))
  assert "remat" not in str(jax.make_jaxpr(lambda p: loss(p, plain))(params))

  # remat_prompt_chunks: every decoder call recomputed chunk by chunk (1 of
  # the 3 masks per chunk here), first pass included: same loss and gradients.
  chunked = InteractiveConfig(num_point_iters=2, num_mask_only_iters=1, remat_prompt_chunks=True)

  def loss_chunked(p):
    emb = model.embed_images(p, images)
    return simulate(model, p, emb, batch, jax.random.PRNGKey(3), chunked, prompt_chunk=1)[0]

  v2, g2 = jax.jit(jax.value_and_grad(loss_chunked))(params)
  np.testing.assert_allclose(float(v2), float(v0), rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g2), jax.tree_util.tree_leaves(g0)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  jaxpr = str(jax.make_jaxpr(loss_chunked)(params))
  # One checkpoint per decoder call (first pass and the scanned follow-ups).
  assert jaxpr.count("remat") >= 2

"""The interactive plan decodes what the reference model decodes."""

import jax
import numpy as np
import pytest

from samjax import build
from samjax.decoding.interactive import InteractivePlan
from samjax.model.prompts import Prompts

SIZE = 256  # vit_tiny input


@pytest.fixture(scope="module")
def tiny():
  model = build("vit_tiny")
  params = model.init(jax.random.PRNGKey(0))
  images = jax.random.normal(jax.random.PRNGKey(11), (2, 3, SIZE, SIZE))
  return model, params, model.embed_images(params, images)


def _prompts(m, n, *, boxes=False, masks=False, seed=7):
  """2 images x m prompts x n point slots, about 30 % of them padding."""
  rng = np.random.default_rng(seed)
  coords = rng.uniform(0, SIZE, (2, m, n, 2)).astype(np.float32)
  labels = rng.integers(-1, 2, (2, m, n)).astype(np.int32)
  valid = rng.uniform(size=(2, m, n)) < 0.7
  box = mask = None
  if boxes:
    xy = rng.uniform(0, SIZE / 2, (2, m, 2))
    box = np.concatenate([xy, xy + rng.uniform(8, SIZE / 2, (2, m, 2))], -1).astype(np.float32)
  if masks:
    mask = rng.normal(size=(2, m, SIZE // 4, SIZE // 4)).astype(np.float32)
  return Prompts.create(coords, labels, box, mask, point_valid=valid,
                        box_valid=None if box is None else rng.uniform(size=(2, m)) < 0.8,
                        mask_valid=None if mask is None else rng.uniform(size=(2, m)) < 0.8)


# vit_tiny's cross attention is 8 wide per head: 1 point = 7 prompt tokens
# (the re-associated products), 2+ points = 8+ tokens (direct attention).
# (prompt mix, multimask outputs): a click, several prompts in chunks with
# direct attention, mask inputs (no cached terms), everything at once.
CASES = [(dict(m=1, n=1), True), (dict(m=3, n=2, boxes=True), True),
         (dict(m=2, n=1, masks=True), False), (dict(m=4, n=3, boxes=True, masks=True), False)]


@pytest.mark.parametrize("case, multimask", CASES,
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items())
                         if isinstance(c, dict) else f"multimask{c}")
def test_plan_equals_reference_decode(tiny, case, multimask):
  model, params, emb = tiny
  prompts = _prompts(**case)
  want = jax.jit(model.decode, static_argnums=3)(params, emb, prompts, multimask)
  plan = InteractivePlan(model, prompt_chunk=2 if case["m"] % 2 == 0 else case["m"])
  got = jax.jit(plan.decode, static_argnums=3)(params, plan.prepare(params, emb), prompts,
                                               multimask)
  for x, y in zip(got, want):
    assert x.shape == y.shape
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_image_state_shapes(tiny):
  model, params, emb = tiny
  state = InteractivePlan(model).prepare(params, emb)
  b, c, h, w = emb.shape
  heads = model.config.decoder_num_heads
  assert state.embeddings.shape == (b, h, w, c) and state.image_pe.shape == (h, w, c)
  assert state.src.shape == (b, h * w, c)
  assert [t.shape for t in state.first_block] == [(b, heads, h * w, c // 2 // heads)] * 3
  np.testing.assert_array_equal(np.asarray(state.image_pe),
                                np.asarray(model.dense_pe(params)).transpose(1, 2, 0))


def test_mask_grid_is_the_top_left_corner_of_the_logits(tiny):
  model, params, emb = tiny
  plan = InteractivePlan(model, prompt_chunk=2)
  state = plan.prepare(params, emb)
  prompts = _prompts(4, 1)
  full = plan.decode(params, state, prompts)
  g = emb.shape[-1]
  for grid in ((g - 4, g), (g, g // 2), (3, 5)):
    part = plan.decode(params, state, prompts, mask_grid=grid)
    assert part[0].shape == full[0].shape[:3] + (4 * grid[0], 4 * grid[1])
    np.testing.assert_allclose(np.asarray(part[0]),
                               np.asarray(full[0][..., :4 * grid[0], :4 * grid[1]]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(part[1]), np.asarray(full[1]), atol=1e-6)
  for bad in ((0, g), (g + 1, g)):
    with pytest.raises(ValueError, match="mask_grid"):
      plan.decode(params, state, prompts, mask_grid=bad)


def test_prompt_chunk_must_divide_the_prompts(tiny):
  model, params, emb = tiny
  plan = InteractivePlan(model, prompt_chunk=3)
  with pytest.raises(ValueError, match="multiple of prompt_chunk"):
    plan.decode(params, plan.prepare(params, emb), _prompts(4, 1))


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_slot_stable_batches_keep_every_prompt_in_its_slot(chunk):
  """Batches of any size start at multiples of it; at ``lead_slot`` every
  prompt p lands in slot p % chunk and the batch fits ``padded_batch``."""
  plan = InteractivePlan(None, prompt_chunk=chunk)
  for batch in range(1, 13):
    size = plan.padded_batch(batch)
    assert size % chunk == 0
    for start in range(0, 10 * batch, batch):
      lead = plan.lead_slot(start)
      assert lead + batch <= size
      assert all((lead + i) % chunk == (start + i) % chunk for i in range(batch))


def test_plan_decodes_in_one_program_for_new_prompt_values(tiny):
  model, params, emb = tiny
  plan = InteractivePlan(model, prompt_chunk=2)
  state = plan.prepare(params, emb)
  decode = jax.jit(plan.decode)
  for seed in range(3):
    decode(params, state, _prompts(2, 2, seed=seed))
  assert decode._cache_size() == 1

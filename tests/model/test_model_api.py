"""Model API contracts: shapes, dtypes, kernels, jit behaviour, sharding annotations."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.model.image_encoder import window_partition, window_unpartition
from samjax.model.prompts import Prompts


@pytest.fixture(scope="module")
def tiny():
  model = build("vit_tiny")
  return model, model.init(jax.random.PRNGKey(0))


def test_shapes_and_param_dtypes(tiny):
  model, params = tiny
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  images = jnp.zeros((3, 3, 256, 256))
  emb = model.embed_images(params, images)
  assert emb.shape == (3, 64, 16, 16)
  coords = jnp.full((3, 5, 2, 2), 100.0)
  labels = jnp.ones((3, 5, 2), jnp.int32)
  prompts = Prompts.create(coords, labels)
  logits, iou = model.decode(params, emb, prompts)
  assert logits.shape == (3, 5, 3, 64, 64) and iou.shape == (3, 5, 3)
  single, single_iou = model.decode(params, emb, prompts, multimask_output=False)
  assert single.shape == (3, 5, 1, 64, 64) and single_iou.shape == (3, 5, 1)
  all4, all4_iou = model.predict_masks(params, emb, prompts)
  assert all4.shape == (3, 5, 4, 64, 64)
  # decode is the official slice of the four tokens.
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(all4[:, :, 1:]))
  np.testing.assert_array_equal(np.asarray(single_iou), np.asarray(all4_iou[:, :, :1]))


def test_window_partition_round_trip():
  x = jnp.arange(2 * 16 * 16 * 3, dtype=jnp.float32).reshape(2, 16, 16, 3)
  windows, padded = window_partition(x, 7)
  assert windows.shape == (2 * 9, 7, 7, 3) and padded == (21, 21)
  np.testing.assert_array_equal(window_unpartition(windows, 7, padded, (16, 16)), x)
  # Padding is zeros at the bottom/right (official behaviour).
  assert float(windows[8, 6, 6, 0]) == 0.0


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_attention_kernels_agree(tiny, impl):
  _, params = tiny
  images = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 256, 256))
  ref = build("vit_tiny", attention_impl="xla").embed_images(params, images)
  other = build("vit_tiny", attention_impl=impl, attention_query_chunk=64)
  np.testing.assert_allclose(other.embed_images(params, images), ref, atol=2e-5)


def test_cpu_attention_kernel_gradients_match_fused():
  """Training on a CPU runs the blocked kernel (one window at a time with the
  bias folded into the scores; query chunks for global attention): its
  outputs and gradients are the fused kernel's. A small model (3x3 windows = 9 tokens,
  4x4 global = 16 tokens in chunks of 8) keeps the two compiles short."""
  from samjax.model.configs import SamConfig
  cfg = SamConfig(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                  encoder_global_attn_indexes=(1,), image_size=64, window_size=3,
                  prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
                  iou_head_hidden_dim=16, attention_query_chunk=9)
  # Random params from numpy (no init program to compile), rel-pos tables
  # included (they start at zero in a real init), so the bias folded into
  # the scores is really exercised.
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, jnp.float32),
                        build(cfg).param_shapes())
  images = jnp.asarray(rng.normal(size=(2, 3, 64, 64)), jnp.float32)
  np.testing.assert_allclose(
      jax.jit(build(cfg, attention_impl="chunked").embed_images)(params, images),
      jax.jit(build(cfg, attention_impl="xla").embed_images)(params, images), atol=2e-5)

  def encoder_grads(impl):
    """d sum(sin(embedding)) / d encoder params (the decoder takes no part)."""
    model = build(cfg, attention_impl=impl)
    loss = lambda p: jnp.sum(jnp.sin(model.embed_images(params | {"image_encoder": p},
                                                        images)))
    return jax.jit(jax.grad(loss))(params["image_encoder"])
  g, g_ref = encoder_grads("chunked"), encoder_grads("xla")
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
    # float32 sums in another order: errors scale with the leaf's largest entry.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_bfloat16_compute_keeps_float32_params(tiny):
  _, params = tiny
  images = jax.random.normal(jax.random.PRNGKey(2), (1, 3, 256, 256))
  f32 = build("vit_tiny").embed_images(params, images)
  bf16 = build("vit_tiny", dtype="bfloat16").embed_images(params, images)
  assert bf16.dtype == jnp.float32  # embeddings are returned in float32
  rel = jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32)
  assert 0 < float(rel) < 0.05


def test_remat_is_numerically_transparent(tiny):
  _, params = tiny
  images = jax.random.normal(jax.random.PRNGKey(3), (1, 3, 256, 256))

  def loss(m, p):
    return jnp.sum(m.embed_images(p, images) ** 2)
  g_plain = jax.grad(lambda p: loss(build("vit_tiny"), p))(params)
  g_remat = jax.grad(lambda p: loss(build("vit_tiny", remat_policy="block"), p))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_drop_path_needs_rng_and_changes_output(tiny):
  _, params = tiny
  model = build("vit_tiny", drop_path_rate=0.5)
  images = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 256, 256))
  det = model.embed_images(params, images)
  np.testing.assert_allclose(det, build("vit_tiny").embed_images(params, images), atol=1e-6)
  a = model.embed_images(params, images, deterministic=False,
                         rngs={"dropout": jax.random.PRNGKey(0)})
  b = model.embed_images(params, images, deterministic=False,
                         rngs={"dropout": jax.random.PRNGKey(1)})
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_decode_compiles_once_for_new_prompt_values(tiny):
  model, params = tiny
  emb = jnp.zeros((1, 64, 16, 16))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def decode(p, e, c, l, v):
    return model.decode(p, e, Prompts.create(c, l, point_valid=v))
  rng = np.random.default_rng(0)
  for n_valid in range(1, 6):  # 1..5 clicks, one bucket of 8 slots
    c = rng.uniform(0, 256, (1, 1, 8, 2)).astype(np.float32)
    l = rng.integers(0, 2, (1, 1, 8)).astype(np.int32)
    v = np.arange(8)[None, None] < n_valid
    decode(params, emb, c, l, v)


def test_every_param_has_logical_axes(tiny):
  model, params = tiny
  specs = model.logical_axes()
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=is_spec)
  assert len(flat_specs) == len(jax.tree_util.tree_leaves(params))
  shapes = jax.tree_util.tree_leaves(params)
  for spec, p in zip(flat_specs, shapes):
    assert len(spec) == p.ndim


def test_sharded_forward_matches_single_device(tiny):
  """Params FSDP-sharded over a 2x4 (data x fsdp) mesh of fake CPU devices."""
  from samjax.logical_axes import DEFAULT_LOGICAL_RULES
  model, params = tiny
  devices = np.array(jax.devices()[:8]).reshape(2, 4, 1)
  mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "model"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
  logical = model.logical_axes()
  shardings = nn.logical_to_mesh_sharding(logical, mesh, DEFAULT_LOGICAL_RULES)
  sharded = jax.device_put(params, shardings)
  images = jax.random.normal(jax.random.PRNGKey(5), (8, 3, 256, 256))
  images_sharded = jax.device_put(
      images, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"))))
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_LOGICAL_RULES):
    out = jax.jit(model.embed_images)(sharded, images_sharded)
  ref = model.embed_images(params, images)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-4)
  # The qkv kernel really is split along the fsdp axis.
  qkv = sharded["image_encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert qkv.sharding.spec[0] == "fsdp"


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="not a multiple of patch_size"):
    build("vit_tiny", image_size=250)
  with pytest.raises(ValueError, match="unknown variant"):
    build("vit_x")
  with pytest.raises(ValueError, match="attention_impl"):
    build("vit_tiny", attention_impl="flash")
  model = build("vit_tiny")
  with pytest.raises(ValueError, match="expects"):
    model.embed_images(model.init(jax.random.PRNGKey(0)), jnp.zeros((1, 3, 128, 128)))

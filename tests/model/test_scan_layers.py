"""Scanned image-encoder blocks and remat policies: same numbers, stacked params, flat graph.

A 6-block encoder with global blocks [2, 5] has ViT-B's layout at half the
depth: the scan runs 2 groups of (2 windowed + 1 global), the 2 windowed
blocks as an inner scan. 64px input, window 3 on a 4x4 grid (padded to 6x6)
keeps the window-padding path in play at CPU-test size. The scanned model's
params are the unrolled ones stacked (``samjax.model.block_stacking``).
"""

import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.model.block_stacking import stack_encoder_blocks, unstack_encoder_blocks
from samjax.model.configs import REMAT_POLICIES, VARIANTS, SamConfig

SMALL = SamConfig(encoder_embed_dim=32, encoder_depth=6, encoder_num_heads=2,
                  encoder_global_attn_indexes=(2, 5), image_size=64, window_size=3,
                  prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
                  iou_head_hidden_dim=16)


# XLA:CPU spends most of these tests in LLVM; unoptimised codegen halves the
# compile time and leaves the arithmetic (no fast-math either way) unchanged.
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def _run(fn, *args):
  """``jax.jit(fn)(*args)``, compiled with ``_FAST_COMPILE``."""
  return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)(*args)


def _random_params(cfg, seed=0):
  """Params of ``cfg`` with every leaf random (init leaves rel-pos tables,
  pos_embed, norms and biases at 0/1, which would hide mistakes in them).
  Built from ``param_shapes()``: no jitted init of the whole model."""
  rng = np.random.default_rng(seed)  # numpy: no per-shape XLA compile

  def leaf(s):
    scale = 1.0 / np.sqrt(s.shape[-2] if len(s.shape) > 1 else 10)
    return jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype)
  return jax.tree.map(leaf, build(cfg).param_shapes())


@pytest.fixture(scope="module")
def setup():
  """(per-block params, images [2, 3, 64, 64], unrolled no-remat (embeddings, grads))."""
  params = _random_params(SMALL)
  images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 64, 64)), jnp.float32)
  return params, images, _embed_and_grad(build(SMALL), params, images)


def _embed_and_grad(model, params, images):
  """(embeddings [B, C, h, w], d sum(emb^2) / d params)."""
  def loss(p):
    emb = model.embed_images(p, images)
    return jnp.sum(emb ** 2), emb
  return _run(jax.grad(loss, has_aux=True), params)[::-1]


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


def test_scan_periods_of_known_layouts():
  periods = {name: cfg.encoder_scan_period for name, cfg in VARIANTS.items()}
  assert periods == {"vit_b": 3, "vit_l": 6, "vit_h": 8, "vit_tiny": 2, "vit_small": 3}
  assert SMALL.encoder_scan_period == 3
  irregular = SMALL.replace(encoder_depth=5, encoder_global_attn_indexes=(1, 3))
  assert irregular.encoder_scan_period is None  # W G W G W
  assert SMALL.replace(encoder_global_attn_indexes=()).encoder_scan_period == 1


@pytest.mark.parametrize("policy", ["none", "block", "dots_saveable", "offload"])
def test_scanned_outputs_and_grads_match_unrolled(setup, policy):
  """Scan with every remat policy gives the unrolled, no-remat numbers.

  "offload" also runs on CPU: host memory is the device memory there, so the
  policy's transfers are no-ops (see ``test_offload_policy_moves_residuals_to_host``).
  """
  params, images, (ref_emb, ref_grads) = setup
  # drop_path_rate is inert when deterministic: exactly the unrolled numbers.
  model = build(SMALL, scan_layers=True, remat_policy=policy, drop_path_rate=0.5)
  emb, grads = _embed_and_grad(model, stack_encoder_blocks(params, model.config), images)
  np.testing.assert_allclose(np.asarray(emb), np.asarray(ref_emb), rtol=1e-5, atol=1e-5)
  grads = unstack_encoder_blocks(grads, model.config)
  _assert_trees_close(grads, ref_grads)
  assert float(jnp.abs(grads["image_encoder"]["blocks_5"]["attn"]["rel_pos_h"]).max()) > 0


def test_scanned_param_tree_is_the_stacked_unrolled_tree():
  plain, scanned = build(SMALL), build(SMALL, scan_layers=True, remat_policy="block")
  stacked = jax.eval_shape(lambda p: stack_encoder_blocks(p, scanned.config),
                           plain.param_shapes())
  assert scanned.param_shapes() == stacked
  encoder = scanned.param_shapes()["image_encoder"]
  assert not any(k.startswith("blocks_") for k in encoder)
  assert encoder["scanned_blocks"]["run_0"]["attn"]["qkv"]["kernel"].shape == (2, 2, 32, 96)
  assert encoder["scanned_blocks"]["run_1"]["attn"]["rel_pos_h"].shape == (2, 7, 16)


def _count(jaxpr, name):
  """Occurrences of primitive ``name`` in a jaxpr, sub-jaxprs (scan bodies) included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      n += _count(sub, name)
  return n


def _forward_jaxpr(cfg):
  """Jaxpr of ``embed_images``."""
  model = build(cfg)
  shapes = model.param_shapes()
  images = jax.ShapeDtypeStruct((1, 3, cfg.image_size, cfg.image_size), jnp.float32)
  return jax.make_jaxpr(model.embed_images)(shapes, images).jaxpr


def test_scan_keeps_the_graph_size_flat_in_depth():
  """With scan the traced graph (what XLA compiles) does not grow with depth.

  Layouts (W windowed, G global): SMALL = 2 x (W W G), 4 x (W W G) as ViT-B,
  2 x (W x 7, G) as a ViT-H group; all compile one W and one G block.
  """
  # The fused attention kernel has no loops of its own (the CPU kernel loops
  # over windows and query chunks), so every scan counted is a block loop.
  small = SMALL.replace(attention_impl="xla")
  layouts = [small, small.replace(encoder_depth=12, encoder_global_attn_indexes=(2, 5, 8, 11)),
             small.replace(encoder_depth=16, encoder_global_attn_indexes=(7, 15))]
  dots, scans = {}, {}
  for cfg in layouts:
    for scan in (False, True) if cfg.encoder_depth < 16 else (True,):
      jaxpr = _forward_jaxpr(cfg.replace(scan_layers=scan))
      scans[cfg.encoder_depth, scan] = _count(jaxpr, "scan")
      dots[cfg.encoder_depth, scan] = _count(jaxpr, "dot_general")
  assert scans == {(6, False): 0, (12, False): 0,
                   (6, True): 2, (12, True): 2, (16, True): 2}  # groups + windowed run
  assert dots[6, True] == dots[12, True] == dots[16, True]
  # Unrolled, 6 more blocks add 6 blocks' dots: the depth-6 graph's dots
  # are all in its blocks (the patch embedding and the neck are convolutions).
  assert dots[12, False] - dots[6, False] == dots[6, False]


def test_irregular_layout_falls_back_to_unrolled():
  cfg = SMALL.replace(encoder_depth=5, encoder_global_attn_indexes=(1, 3),  # W G W G W
                      attention_impl="xla")  # no kernel loops: every scan is a block loop
  assert cfg.encoder_scan_period is None
  scanned = _forward_jaxpr(cfg.replace(scan_layers=True))
  assert _count(scanned, "scan") == 0
  # The very same program as without scan_layers.
  assert str(scanned) == str(_forward_jaxpr(cfg))


def test_scanned_drop_path_is_seeded_and_keeps_dtype(setup):
  params, images, _ = setup
  model = build(SMALL, scan_layers=True, drop_path_rate=0.5, dtype="bfloat16",
                remat_policy="block")
  params = stack_encoder_blocks(params, model.config)

  def train_embed(p, key):
    return model.embed_images(p, images, deterministic=False, rngs={"dropout": key})
  # Compiling at all checks that the bf16 carry stays bf16 through the scan
  # (a traced float32 rate would promote it and scan would reject the carry).
  train_embed = jax.jit(train_embed).lower(params, jax.random.PRNGKey(0)).compile(
      compiler_options=_FAST_COMPILE)
  a = train_embed(params, jax.random.PRNGKey(0))
  b = train_embed(params, jax.random.PRNGKey(0))
  c = train_embed(params, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same seed, same run
  assert float(jnp.abs(a - c).max()) > 1e-3
  assert bool(jnp.isfinite(a).all())


@pytest.mark.parametrize("scan", [True, False])
def test_offload_policy_moves_residuals_to_host(setup, scan):
  """The policy is applied on both paths: offload puts residuals in host memory."""
  params, images, _ = setup

  def grad_jaxpr(policy):
    model = build(SMALL, scan_layers=scan, remat_policy=policy)
    p = stack_encoder_blocks(params, model.config)
    return str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(model.embed_images(p, images))))(p))
  assert "MemorySpace.Host" in grad_jaxpr("offload")
  assert "MemorySpace.Host" not in grad_jaxpr("dots_saveable")


def test_remat_policy_validation_and_json():
  assert SamConfig().remat_policy == "none"
  assert SamConfig(remat_policy="offload").remat_policy == "offload"
  with pytest.raises(TypeError, match="remat"):
    SamConfig(remat=True)  # the former switch: remat_policy="block" says it
  with pytest.raises(ValueError, match=r"remat_policy='full'.*none, block, dots_saveable, offload"):
    SamConfig(remat_policy="full")
  with pytest.raises(ValueError, match="scan_layers='yes'"):
    SamConfig(scan_layers="yes")
  assert REMAT_POLICIES == ("none", "block", "dots_saveable", "offload")
  cfg = SMALL.replace(scan_layers=True, remat_policy="dots_saveable")
  assert SamConfig.from_dict(json.loads(cfg.to_json())) == cfg
  assert cfg.same_architecture(SMALL)  # compute fields, not architecture
  # Model configs saved with the former ``remat`` switch (workdirs, model
  # dirs) still load, with its meaning: "block" unless a policy was set.
  saved = json.loads(SMALL.to_json())
  assert "remat" not in saved
  for remat, policy, want in ((True, "none", "block"), (False, "none", "none"),
                              (True, "dots_saveable", "dots_saveable")):
    loaded = SamConfig.from_dict({**saved, "remat": remat, "remat_policy": policy})
    assert loaded.remat_policy == want
  # So does JSON written before scan_layers / remat_policy existed.
  old = {**saved, "remat": True}
  del old["scan_layers"], old["remat_policy"]
  loaded = SamConfig.from_dict(old)
  assert not loaded.scan_layers and loaded.remat_policy == "block"


def test_sharded_scanned_forward_matches_single_device(setup):
  """FSDP + tensor-parallel params on a 1x2x4 mesh: constraints work inside the scan."""
  import flax.linen as nn

  from samjax.logical_axes import DEFAULT_LOGICAL_RULES
  params, images, (ref_emb, _) = setup
  model = build(SMALL, scan_layers=True, remat_policy="block")
  devices = np.array(jax.devices()[:8]).reshape(1, 2, 4)
  mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "model"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
  shardings = nn.logical_to_mesh_sharding(model.logical_axes(), mesh, DEFAULT_LOGICAL_RULES)
  sharded = jax.device_put(stack_encoder_blocks(params, model.config), shardings)
  images_sharded = jax.device_put(
      images, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"))))
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_LOGICAL_RULES):
    out = _run(model.embed_images, sharded, images_sharded)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref_emb), rtol=1e-5, atol=1e-4)
  # Stacked dims replicated, each block's own dims sharded as unrolled.
  qkv = sharded["image_encoder"]["scanned_blocks"]["run_0"]["attn"]["qkv"]["kernel"]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp", "model")

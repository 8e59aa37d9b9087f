"""Stacked encoder-block params (``scan_layers``): the layout and its
conversion, drop-path masks, and what must see the per-block layout (official
/ Hugging Face export, workdir export, layer-wise lr decay).

``SMALL`` (from ``test_scan_layers``) has ViT-B's layout at half the depth:
2 groups of (2 windowed + 1 global), so run_0 leaves are [2, 2, ...] (blocks
0, 1 / 3, 4) and run_1 leaves [2, ...] (blocks 2 / 5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import build
from samjax.model.block_stacking import (
  block_runs,
  convert_block_layout,
  stack_encoder_blocks,
  unstack_encoder_blocks,
  uses_stacked_blocks,
)
from samjax.model.configs import get_config
from tests.model.test_scan_layers import _FAST_COMPILE, SMALL, _random_params, _run

SCANNED = SMALL.replace(scan_layers=True)


@pytest.fixture(scope="module")
def params():
  """Random per-block params of SMALL, as numpy arrays."""
  return jax.tree.map(np.asarray, _random_params(SMALL))


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=jax.tree_util.keystr(path))


# --- layout -------------------------------------------------------------------------

def test_runs_of_official_layouts():
  def runs(variant):
    return [(r.name, r.start, r.length, r.window)
            for r in block_runs(get_config(variant, scan_layers=True))]
  assert runs("vit_b") == [("run_0", 0, 2, 14), ("run_1", 2, 1, 0)]
  assert runs("vit_h") == [("run_0", 0, 7, 14), ("run_1", 7, 1, 0)]
  vit_b = block_runs(get_config("vit_b", scan_layers=True))
  assert vit_b[0].block_index.tolist() == [[0, 1], [3, 4], [6, 7], [9, 10]]
  assert vit_b[1].block_index.tolist() == [2, 5, 8, 11]
  assert uses_stacked_blocks(SCANNED) and not uses_stacked_blocks(SMALL)
  irregular = SCANNED.replace(encoder_depth=5, encoder_global_attn_indexes=(1, 3))
  assert not uses_stacked_blocks(irregular)


def test_stack_unstack_round_trip_is_bit_exact(params):
  stacked = stack_encoder_blocks(params, SCANNED)
  runs = stacked["image_encoder"]["scanned_blocks"]
  blocks = params["image_encoder"]
  # Block g * p + start + l at [g, l] ([g] for a run of one block).
  np.testing.assert_array_equal(runs["run_0"]["attn"]["qkv"]["kernel"][1, 0],
                                blocks["blocks_3"]["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(runs["run_1"]["mlp"]["lin2"]["bias"][1],
                                blocks["blocks_5"]["mlp"]["lin2"]["bias"])
  back = unstack_encoder_blocks(stacked, SCANNED)
  _assert_trees_equal(back, params)
  _assert_trees_equal(stack_encoder_blocks(back, SCANNED), stacked)
  # Per-block configs keep the per-block layout: both are the identity.
  assert stack_encoder_blocks(params, SMALL) is params
  assert unstack_encoder_blocks(params, SMALL) is params
  _assert_trees_equal(convert_block_layout(stacked, SCANNED, SMALL), params)
  with pytest.raises(ValueError, match="scanned_blocks"):
    unstack_encoder_blocks(params, SCANNED)


def test_stacked_logical_axes_have_each_leafs_rank():
  """Stacked dims get None, the per-block dims keep the unrolled names."""
  model = build(SCANNED)
  shapes, axes = model.param_shapes(), model.logical_axes()
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  flat_axes = jax.tree_util.tree_leaves_with_path(axes, is_leaf=is_spec)
  assert len(flat_axes) == len(jax.tree.leaves(shapes))
  for (path, spec), shape in zip(flat_axes, jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape), jax.tree_util.keystr(path)
  plain = build(SMALL).logical_axes()["image_encoder"]
  for run in block_runs(SCANNED):
    lead = run.block_index.ndim
    ref = plain[f"blocks_{run.block_index.flat[0]}"]
    stacked = axes["image_encoder"]["scanned_blocks"][run.name]
    for spec, want in zip(jax.tree.leaves(stacked, is_leaf=is_spec),
                          jax.tree.leaves(ref, is_leaf=is_spec)):
      assert tuple(spec) == (None,) * lead + tuple(want)


def test_init_draws_every_stacked_block_on_its_own():
  p = _run(build(SCANNED).init, jax.random.PRNGKey(0))["image_encoder"]["scanned_blocks"]
  k = np.asarray(p["run_0"]["attn"]["qkv"]["kernel"])  # [G, L, C, 3C]
  assert not np.array_equal(k[0, 0], k[0, 1]) and not np.array_equal(k[0, 0], k[1, 0])
  g = np.asarray(p["run_1"]["attn"]["qkv"]["kernel"])  # [G, C, 3C]
  assert not np.array_equal(g[0], g[1])


# --- drop path ----------------------------------------------------------------------

def test_drop_path_masks_are_the_same_scanned_or_unrolled(params):
  """Same rngs -> the same masks: outputs and gradients agree with drop path on."""
  images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 64, 64)), jnp.float32)
  stacked = stack_encoder_blocks(params, SCANNED)

  keys = [jax.random.PRNGKey(0), jax.random.PRNGKey(1)]

  def embed_and_grad(cfg, p):
    """[(embeddings, per-block grads)] for each of ``keys`` (one compile)."""
    model = build(cfg, drop_path_rate=0.5)

    def loss(p, key):
      emb = model.embed_images(p, images, deterministic=False, rngs={"dropout": key})
      return jnp.sum(emb ** 2), emb
    grad = jax.jit(jax.grad(loss, has_aux=True)).lower(p, keys[0]).compile(
        compiler_options=_FAST_COMPILE)
    return [(emb, unstack_encoder_blocks(grads, cfg))
            for grads, emb in (grad(p, key) for key in keys)]

  ref = embed_and_grad(SMALL, params)
  for (emb, grads), (ref_emb, ref_grads) in zip(embed_and_grad(SCANNED, stacked), ref):
    np.testing.assert_allclose(np.asarray(emb), np.asarray(ref_emb), rtol=1e-5, atol=1e-5)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5,
                                 err_msg=jax.tree_util.keystr(path))
  # The masks are on: another seed gives other outputs.
  assert float(jnp.abs(ref[0][0] - ref[1][0]).max()) > 1e-3


# --- interop ------------------------------------------------------------------------

def test_official_state_dict_round_trip_from_a_scanned_config(params, tmp_path):
  import torch

  from samjax.interop import (
    build_official_sam,
    export_official,
    import_official,
    params_from_state_dict,
    state_dict_from_params,
  )
  official = state_dict_from_params(params, SMALL)
  stacked = params_from_state_dict(official, SCANNED)
  _assert_trees_equal(stacked, stack_encoder_blocks(params, SCANNED))
  again = state_dict_from_params(stacked, SCANNED)
  assert list(again) == list(official)
  _assert_trees_equal(again, official)
  # A .pth export: official keys, and its sidecar brings the scanned config back.
  path = str(tmp_path / "small.pth")
  export_official(stacked, SCANNED, path)
  build_official_sam(SCANNED).load_state_dict(torch.load(path, weights_only=True),
                                              strict=True)
  config, loaded = import_official(path)
  assert config == SCANNED
  _assert_trees_equal(loaded, stacked)


def test_hf_and_model_dir_round_trips_from_a_scanned_config(params, tmp_path):
  pytest.importorskip("safetensors")
  from samjax.interop import hf_io, load_model_dir, save_model_dir
  from samjax.interop.hf_keys import hf_from_official
  from samjax.interop.state_dict import state_dict_from_params
  stacked = stack_encoder_blocks(params, SCANNED)
  tensors = hf_io.save_hf_dir(str(tmp_path / "hf"), stacked, SCANNED)
  _assert_trees_equal(tensors, hf_from_official(state_dict_from_params(params, SMALL), SMALL))
  config, loaded = hf_io.load_hf_dir(str(tmp_path / "hf"))
  assert config == SCANNED
  _assert_trees_equal(loaded, stacked)
  save_model_dir(str(tmp_path / "model"), stacked, SCANNED)
  config, loaded = load_model_dir(str(tmp_path / "model"))
  assert config == SCANNED
  _assert_trees_equal(loaded, stacked)


def test_scanned_training_workdir_exports_per_block(params, tmp_path, capsys):
  """A workdir whose checkpoints hold stacked params exports the official layout."""
  import orbax.checkpoint as ocp
  import torch

  from data_pipelines import storage
  from samjax import formats, load_sam
  from samjax.checkpoints.workdir import WorkdirCheckpoints
  from samjax.cli import main
  from samjax.interop import state_dict_from_params
  from samjax.loading import load_config_and_params
  workdir = str(tmp_path / "run")
  stacked = stack_encoder_blocks(params, SCANNED)
  ckpt = WorkdirCheckpoints(workdir, async_save=False)
  ckpt.manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(
      {"step": np.int32(1), "params": stacked})))
  ckpt.close()
  formats.write_model_metadata(storage.join(workdir, formats.WORKDIR_MODEL_CONFIG),
                               SCANNED, source="test")
  config, loaded = load_config_and_params(workdir)
  assert config == SCANNED
  _assert_trees_equal(loaded, stacked)
  out = str(tmp_path / "exported.pth")
  assert main(["convert", "--to-torch", workdir, "--out", out]) == 0
  exported = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
  official = state_dict_from_params(params, SMALL)
  assert list(exported) == list(official)
  _assert_trees_equal(exported, official)
  # Loaded with scan_layers=False: unstacked to the per-block layout.
  unrolled = load_sam(workdir, scan_layers=False)
  _assert_trees_equal(unrolled.params, params)
  capsys.readouterr()


def test_init_from_checkpoint_or_mae_into_a_scanning_model(tiny_official_pth, tmp_path):
  """``init.kind`` sam / mae: per-block weights land stacked in a scan_layers model."""
  import ml_collections

  from samjax.interop import import_official
  from samjax.interop.torch_io import save_state_dict
  from samjax.train.init import make_init_params
  from tests.interop.test_mae import fake_mae
  model = build("vit_tiny", scan_layers=True)
  assert uses_stacked_blocks(model.config)
  structure = jax.tree.structure(model.param_shapes())
  init = ml_collections.ConfigDict({"kind": "sam", "checkpoint": tiny_official_pth})
  loaded = make_init_params(init, model)(jax.random.PRNGKey(0))
  assert jax.tree.structure(loaded) == structure
  config, official = import_official(tiny_official_pth)
  assert not uses_stacked_blocks(config)
  _assert_trees_equal(unstack_encoder_blocks(loaded, model.config), official)

  path = str(tmp_path / "mae.pth")
  save_state_dict(fake_mae(), path)
  init = ml_collections.ConfigDict({"kind": "mae", "checkpoint": path})
  mae = make_init_params(init, model, log=lambda _: None)(jax.random.PRNGKey(0))
  assert jax.tree.structure(mae) == structure
  blocks = unstack_encoder_blocks(mae, model.config)["image_encoder"]
  np.testing.assert_array_equal(blocks["blocks_3"]["attn"]["qkv"]["bias"],
                                fake_mae()["blocks.3.attn.qkv.bias"])


# --- optimizer ----------------------------------------------------------------------

def test_layer_decay_multipliers_per_block_match_unrolled():
  from samjax.train.optimizer import lr_multipliers
  plain_shapes, shapes = build(SMALL).param_shapes(), build(SCANNED).param_shapes()
  plain = lr_multipliers(plain_shapes, SMALL, 0.7, image_encoder_lr_scale=0.5)
  stacked = lr_multipliers(shapes, SCANNED, 0.7, image_encoder_lr_scale=0.5)
  qkv = stacked["image_encoder"]["scanned_blocks"]["run_0"]["attn"]["qkv"]["kernel"]
  assert qkv.shape == (2, 2, 1, 1) and len(np.unique(qkv)) == 4
  # Each block's slice of the (broadcast) stacked multiplier is its unrolled float.
  full = jax.tree.map(lambda m, s: np.broadcast_to(np.asarray(m), s.shape), stacked, shapes)
  per_block = unstack_encoder_blocks(full, SCANNED)
  assert jax.tree.structure(per_block) == jax.tree.structure(plain)
  for (path, m), want in zip(jax.tree_util.tree_leaves_with_path(per_block),
                             jax.tree.leaves(plain)):
    assert np.all(m == want), (jax.tree_util.keystr(path), m, want)


def test_optimizer_updates_match_unrolled(params):
  from samjax.train.optimizer import make_optimizer
  rng = np.random.default_rng(5)
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)

  def update(cfg):
    p, g = stack_encoder_blocks(params, cfg), stack_encoder_blocks(grads, cfg)
    tx, _ = make_optimizer(p, cfg, lr=1e-2, warmup_steps=1, layer_decay=0.7,
                           weight_decay=0.1)
    return unstack_encoder_blocks(_run(lambda g, p: tx.update(g, tx.init(p), p)[0], g, p), cfg)
  # Compiled: XLA may fold a scalar multiplier and a broadcast one in other
  # orders (1 ulp); the multipliers themselves are compared exactly above.
  stacked, plain = update(SCANNED), update(SMALL)
  assert jax.tree.structure(stacked) == jax.tree.structure(plain)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(stacked), jax.tree.leaves(plain)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0,
                               err_msg=jax.tree_util.keystr(path))


def test_train_program_shards_and_lowers_with_stacked_blocks():
  """Train state, shardings and per-block lr multipliers of a scan_layers run
  fit together: the train step lowers (no compile: tracing is the check)."""
  from samjax.configs import load_config
  from samjax.train.setup import build_program
  prog = build_program(load_config("tiny_demo", [
      "--config.model.overrides={'image_size': 64}", "--config.model.scan_layers=True",
      "--config.data.batch_size=8", "--config.data.max_masks=2",
      "--config.mesh.shape=(1,8,1)", "--config.optim.layer_decay=0.8"]))
  run_0 = prog.abstract_state["params"]["image_encoder"]["scanned_blocks"]["run_0"]
  qkv = run_0["attn"]["qkv"]["kernel"]  # vit_tiny: 2 groups of (windowed, global)
  assert qkv.shape == (2, 96, 288)
  assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "model")
  prog.train_step.lower(prog.abstract_state, prog.abstract_batch())

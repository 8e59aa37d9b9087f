"""The train program's setup: what ``samjax plan`` lowers is what runs."""

import jax
import numpy as np
import pytest

from data_pipelines import decode
from samjax.configs import load_config
from samjax.train.setup import BATCH_KEYS, build_program

TINY = ["--config.model.overrides={'image_size': 64}", "--config.data.batch_size=8",
        "--config.data.max_masks=2"]


def test_abstract_batch_matches_the_pipeline():
  prog = build_program(load_config("tiny_demo", TINY))
  abstract = prog.abstract_batch()
  real = decode.empty_batch(decode.DecodeConfig(image_size=64, gt_size=16, max_masks=2), 8)
  assert set(abstract) == set(BATCH_KEYS)
  for k in BATCH_KEYS:
    assert abstract[k].shape == real[k].shape, k
    assert np.dtype(abstract[k].dtype) == real[k].dtype, k
    assert abstract[k].sharding == prog.batch_sharding


def test_state_is_abstract_and_sharded_over_fsdp():
  prog = build_program(load_config("tiny_demo", TINY + ["--config.mesh.shape=(1,8,1)"]))
  leaves = jax.tree_util.tree_leaves(prog.abstract_state)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing materialised
  qkv = prog.abstract_state["params"]["image_encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert not qkv.sharding.is_fully_replicated
  # Dims 8 does not divide (the 4-channel mask-downscaling conv) are replicated
  # rather than split unevenly, which jax could not lower.
  for leaf in leaves:
    for dim, axes in zip(leaf.shape, leaf.sharding.spec):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      size = int(np.prod([prog.mesh.shape[a] for a in names])) if names else 1
      assert dim % size == 0, (leaf.shape, leaf.sharding.spec)


def test_large_leaves_must_be_sharded():
  """Rules that map no param axis to fsdp/model (here only the activations'
  batch, pure data parallelism) would replicate the whole tree on every chip:
  refused, naming the leaves."""
  overrides = TINY + ["--config.mesh.shape=(1,8,1)", "--config.min_sharded_bytes=1024",
                      "--config.logical_rules=(('activation_batch','data'),)"]
  with pytest.raises(ValueError, match=r"would be replicated.*qkv/kernel"):
    build_program(load_config("tiny_demo", overrides))
  # Pure data parallelism replicates on purpose: no error.
  build_program(load_config("tiny_demo", overrides[:-3] + ["--config.mesh.shape=(8,1,1)",
                                                           "--config.min_sharded_bytes=1024"]))

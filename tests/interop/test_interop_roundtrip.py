"""official -> samjax -> .pth round trips, strict loading, and clear errors."""

import fractions
import json

import numpy as np
import pytest
import torch

from samjax import build
from samjax.interop import (
  CheckpointMismatchError,
  build_official_sam,
  export_official,
  import_official,
  param_table,
  params_from_state_dict,
  sidecar_path,
  state_dict_from_params,
)
from samjax.interop.torch_io import save_state_dict
from samjax.model.configs import VARIANTS


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_table_covers_official_state_dict_exactly(variant):
  """Every official key appears once in the table, with the right shape."""
  import jax

  from samjax.interop.param_table import flatten, torch_shape
  model = build(variant)
  sam = build_official_sam(model.config)
  official = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
  rules = param_table(model.config)
  assert [r.torch_key for r in rules] == list(official)  # same keys, same order
  shapes = {p: tuple(s.shape) for p, s in flatten(model.param_shapes()).items()}
  assert set(shapes) == {r.jax_path for r in rules}  # every param mapped once
  for r in rules:
    assert torch_shape(r, shapes[r.jax_path]) == official[r.torch_key], r
  del jax


def test_tiny_round_trip_is_exact_and_loads_strict(tiny_pair, tmp_path):
  sam, model, params = tiny_pair
  path = str(tmp_path / "tiny.pth")
  written = export_official(params, model.config, path)
  original = sam.state_dict()
  loaded = torch.load(path, weights_only=True)
  assert list(loaded) == list(original)
  for k, v in original.items():
    assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    assert np.array_equal(written[k], v.numpy())
  # The sidecar rebuilds the official model of this non-standard size.
  with open(sidecar_path(path)) as f:
    meta = json.load(f)
  assert meta["official_constructor_kwargs"]["image_encoder"]["embed_dim"] == 96
  rebuilt = build_official_sam(model.config)
  rebuilt.load_state_dict(loaded, strict=True)
  # And importing the export gives the same params back (config via sidecar).
  config, params2 = import_official(path)
  assert config.same_architecture(model.config)
  import jax
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)):
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_vit_b_round_trip_exact_and_registry_loads_strict(vit_b_pair, tmp_path):
  from segment_anything import sam_model_registry
  sam, model, params = vit_b_pair
  path = str(tmp_path / "sam_vit_b.pth")
  export_official(params, model.config, path)
  loaded = torch.load(path, weights_only=True)
  original = sam.state_dict()
  assert list(loaded) == list(original)
  assert all(torch.equal(loaded[k], v) for k, v in original.items())
  # The official builder loads it (load_state_dict is strict by default).
  rebuilt = sam_model_registry["vit_b"](checkpoint=path)
  assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in original.items())


def _tiny_state_dict(tiny_pair):
  sam, model, _ = tiny_pair
  return {k: v.numpy().copy() for k, v in sam.state_dict().items()}, model.config


def test_missing_unexpected_and_shape_errors_are_named(tiny_pair):
  sd, cfg = _tiny_state_dict(tiny_pair)
  del sd["mask_decoder.iou_token.weight"]
  sd["mask_decoder.extra_head.weight"] = np.zeros(3, np.float32)
  sd["image_encoder.blocks.1.attn.qkv.weight"] = np.zeros((5, 5), np.float32)
  with pytest.raises(CheckpointMismatchError) as e:
    params_from_state_dict(sd, cfg, source="bad.pth")
  msg = str(e.value)
  assert "bad.pth" in msg
  assert "missing keys (1): mask_decoder.iou_token.weight" in msg
  assert "unexpected keys (1): mask_decoder.extra_head.weight" in msg
  assert "image_encoder.blocks.1.attn.qkv.weight: checkpoint (5, 5), model (288, 96)" in msg
  assert e.value.missing == ["mask_decoder.iou_token.weight"]


def test_variant_mismatch_is_detected_and_named(tiny_pair, tmp_path):
  sd, _ = _tiny_state_dict(tiny_pair)
  path = str(tmp_path / "tiny_raw.pth")
  save_state_dict(sd, path)  # no sidecar: a bare state_dict
  with pytest.raises(CheckpointMismatchError) as e:
    import_official(path, variant="vit_b")
  msg = str(e.value)
  assert "--variant vit_b" in msg and "vit_tiny" in msg and "embed dim 96" in msg


def test_variant_inferred_from_shapes(tiny_pair, tmp_path):
  sd, cfg = _tiny_state_dict(tiny_pair)
  path = str(tmp_path / "tiny_raw.pth")
  save_state_dict(sd, path)
  config, _ = import_official(path)  # heads are not in the shapes: matched to vit_tiny
  assert config == cfg
  config, _ = import_official(path, variant="vit_tiny")
  assert config == cfg


def test_not_a_checkpoint_gets_clear_error(tmp_path):
  path = tmp_path / "junk.pth"
  path.write_bytes(b"this is not a checkpoint")
  with pytest.raises(ValueError, match="junk.pth is not a loadable PyTorch checkpoint"):
    import_official(str(path))
  with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
    import_official(str(tmp_path / "absent.pth"))


def test_pickled_code_is_refused(tmp_path):
  """weights_only=True: a checkpoint carrying arbitrary objects is rejected."""
  path = str(tmp_path / "evil.pth")
  torch.save({"w": torch.zeros(2), "obj": fractions.Fraction(1, 3)}, path)
  with pytest.raises(ValueError, match="not a loadable PyTorch checkpoint"):
    import_official(path)


def test_params_to_state_dict_rejects_wrong_tree(tiny_pair):
  _, model, params = tiny_pair
  bad = dict(params)
  bad["prompt_encoder"] = dict(bad["prompt_encoder"])
  del bad["prompt_encoder"]["no_mask_embed"]
  with pytest.raises(CheckpointMismatchError, match="prompt_encoder/no_mask_embed/embedding"):
    state_dict_from_params(bad, model.config)

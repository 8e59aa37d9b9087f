"""Image-encoder initialisation from an MAE checkpoint (official MAE layout)."""

import jax
import ml_collections
import numpy as np
import pytest

from samjax import build
from samjax.interop import CheckpointMismatchError
from samjax.interop.mae import encoder_params_from_mae, resize_pos_embed
from samjax.interop.torch_io import save_state_dict
from samjax.train.init import make_init_params


def fake_mae(dim=96, depth=4, mlp=384, grid=14, patch=16, seed=0, extras=True):
  """A state dict shaped like facebookresearch/mae's ViT (random values)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.normal(size=s).astype(np.float32)
  sd = {"patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
        "pos_embed": r(1, 1 + grid * grid, dim)}
  for i in range(depth):
    b = f"blocks.{i}."
    sd.update({b + "norm1.weight": r(dim), b + "norm1.bias": r(dim),
               b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
               b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
               b + "norm2.weight": r(dim), b + "norm2.bias": r(dim),
               b + "mlp.fc1.weight": r(mlp, dim), b + "mlp.fc1.bias": r(mlp),
               b + "mlp.fc2.weight": r(dim, mlp), b + "mlp.fc2.bias": r(dim)})
  if extras:  # MAE-only tensors SAM has no place for
    sd.update({"cls_token": r(1, 1, dim), "mask_token": r(1, 1, 64), "norm.weight": r(dim),
               "norm.bias": r(dim), "decoder_embed.weight": r(64, dim),
               "decoder_pos_embed": r(1, 1 + grid * grid, 64)})
  return sd


def test_every_mae_tensor_lands_in_sam_layout():
  model = build("vit_tiny")
  sd = fake_mae()
  enc, ignored = encoder_params_from_mae(sd, model.config)
  assert set(ignored) == {"cls_token", "mask_token", "norm.weight", "norm.bias",
                          "decoder_embed.weight", "decoder_pos_embed"}
  np.testing.assert_array_equal(enc["blocks_2"]["mlp"]["lin1"]["kernel"],
                                sd["blocks.2.mlp.fc1.weight"].T)
  np.testing.assert_array_equal(enc["blocks_3"]["attn"]["qkv"]["bias"],
                                sd["blocks.3.attn.qkv.bias"])
  np.testing.assert_array_equal(enc["blocks_0"]["norm2"]["scale"], sd["blocks.0.norm2.weight"])
  np.testing.assert_array_equal(enc["patch_embed"]["proj"]["kernel"],
                                sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
  assert enc["pos_embed"].shape == (1, 16, 16, 96)  # 14x14 pretraining grid -> 16x16
  assert "neck_0" not in enc and "rel_pos_h" not in enc["blocks_0"]["attn"]


def test_pos_embed_resize_convention():
  """Same grid: unchanged; constants stay constant; a smooth field is sampled at
  the target cell centres (align_corners=False: x_src = (x + 0.5) * n / m - 0.5)."""
  n, m, d = 14, 32, 3
  same = np.random.default_rng(0).normal(size=(1, 1 + n * n, d)).astype(np.float32)
  np.testing.assert_array_equal(resize_pos_embed(same, (n, n)), same[:, 1:].reshape(1, n, n, d))
  const = np.full((1, 1 + n * n, d), 0.25, np.float32)
  np.testing.assert_allclose(resize_pos_embed(const, (m, m)), 0.25, atol=1e-6)
  f = lambda y, x: np.sin(0.15 * x) + np.cos(0.1 * y)
  ys, xs = np.mgrid[:n, :n].astype(np.float32)
  src = np.concatenate([np.zeros((1, 1)), f(ys, xs).reshape(1, n * n)], 1)[..., None]
  out = resize_pos_embed(src.astype(np.float32), (m, m))[0, ..., 0]
  inner = slice(3, m - 3)  # away from the clamped border

  def err(c):  # c: source coordinate of each target cell
    yt, xt = np.meshgrid(c, c, indexing="ij")
    return np.abs(out - f(yt, xt))[inner, inner].max()
  # Cubic convolution (a = -0.75) is not exact even on smooth fields, so
  # compare against the align_corners=True convention, ~5x worse here.
  assert err((np.arange(m) + 0.5) * n / m - 0.5) < 0.015
  assert err(np.arange(m) * (n - 1) / (m - 1)) > 0.04


@pytest.mark.parametrize("kwargs, what", [
    (dict(depth=3), "missing keys"),
    (dict(depth=5), "unexpected keys"),
    (dict(dim=64, mlp=256), "shape mismatch"),
    (dict(patch=14), "shape mismatch for patch_embed.proj.weight"),
])
def test_mismatched_mae_checkpoints_are_named(kwargs, what):
  with pytest.raises(CheckpointMismatchError, match=what):
    encoder_params_from_mae(fake_mae(**kwargs), build("vit_tiny").config)


def test_init_kind_mae_replaces_only_the_encoder(tmp_path):
  model = build("vit_tiny")
  path = str(tmp_path / "mae_pretrain_vit_tiny.pth")
  save_state_dict(fake_mae(), path)
  cfg = ml_collections.ConfigDict({"kind": "mae", "checkpoint": path})
  messages = []
  params = make_init_params(cfg, model, log=messages.append)(jax.random.PRNGKey(0))
  scratch = model.init(jax.random.PRNGKey(0))
  sd = fake_mae()
  np.testing.assert_array_equal(params["image_encoder"]["blocks_1"]["attn"]["proj"]["kernel"],
                                sd["blocks.1.attn.proj.weight"].T)
  for keep in ("prompt_encoder", "mask_decoder"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, params[keep], scratch[keep])
  np.testing.assert_array_equal(params["image_encoder"]["neck_0"]["kernel"],
                                scratch["image_encoder"]["neck_0"]["kernel"])
  assert "MAE encoder weights" in messages[0]
  with pytest.raises(ValueError, match="needs init.checkpoint"):
    make_init_params(ml_collections.ConfigDict({"kind": "mae", "checkpoint": ""}), model)

"""`samjax convert --to-hf / --from-hf` (Hugging Face transformers SamModel) and
`--to-torch --format safetensors`, through the real CLI entry point."""

import json
import os

import numpy as np
import pytest
import torch

from samjax.cli import main
from samjax.interop import build_official_sam
from tests.interop.official_helpers import official_decode, official_embed

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def exported(tiny_official_pth, tmp_path_factory):
  """official .pth -> samjax dir -> HF folder -> samjax dir -> official .pth."""
  root = tmp_path_factory.mktemp("hf")
  paths = {name: str(root / name) for name in ("model", "hf", "back", "back.pth")}
  assert main(["convert", "--from-torch", tiny_official_pth, "--out", paths["model"]]) == 0
  assert main(["convert", "--to-hf", paths["model"], "--out", paths["hf"]]) == 0
  assert main(["convert", "--from-hf", paths["hf"], "--out", paths["back"]]) == 0
  assert main(["convert", "--to-torch", paths["back"], "--out", paths["back.pth"]]) == 0
  return paths


@pytest.fixture(scope="module")
def hf_model(exported):
  model, info = transformers.SamModel.from_pretrained(exported["hf"],
                                                      output_loading_info=True)
  return model.eval(), info


def test_hf_folder_loads_without_missing_or_unexpected_keys(exported, hf_model, tiny_pair):
  model, info = hf_model
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"] and not info["error_msgs"], info
  assert sorted(os.listdir(exported["hf"])) == ["config.json", "model.safetensors",
                                                "samjax_export.json"]
  # Every HF tensor holds the official tensor it maps to (the tied positional
  # table included), so nothing kept a fresh initialisation.
  sam = tiny_pair[0]
  hf_sd = model.state_dict()
  gauss = sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
  assert torch.equal(hf_sd["shared_image_embedding.positional_embedding"], gauss)
  assert torch.equal(hf_sd["prompt_encoder.shared_embedding.positional_embedding"], gauss)
  from samjax.interop.hf_keys import key_table
  official = sam.state_dict()
  for o, h in key_table(tiny_pair[1].config):
    assert torch.equal(hf_sd[h], official[o]), (o, h)


def _agree(got, want):
  assert got.shape == want.shape, (got.shape, want.shape)
  assert np.abs(got - want).max() <= 1e-3, np.abs(got - want).max()
  assert ((got > 0) == (want > 0)).mean() >= 0.999


def test_hf_model_matches_official_point_and_box(hf_model, tiny_pair):
  model, _ = hf_model
  sam = tiny_pair[0]
  size = sam.image_encoder.img_size
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(1, 3, size, size)).astype(np.float32)  # preprocessed
  emb = official_embed(sam, pixels)
  coords = np.array([[[70.0, 150.0], [180.0, 40.0]]], np.float32)  # [P=1, N=2, 2]
  labels = np.array([[1, 0]], np.int32)
  box = np.array([[30.0, 40.0, 200.0, 180.0]], np.float32)  # [P=1, 4]
  want_pt, want_pt_iou = official_decode(sam, emb, coords=coords, labels=labels)
  want_box, _ = official_decode(sam, emb, box=box)
  with torch.no_grad():
    pv = torch.from_numpy(pixels)
    out_pt = model(pixel_values=pv, input_points=torch.from_numpy(coords[None]),
                   input_labels=torch.from_numpy(labels[None]).long())
    out_box = model(pixel_values=pv, input_boxes=torch.from_numpy(box[None]))
  # HF: pred_masks [B=1, P, 3, 4h, 4w]; official: [P, 3, 4h, 4w].
  _agree(out_pt.pred_masks[0].numpy(), want_pt)
  _agree(out_box.pred_masks[0].numpy(), want_box)
  np.testing.assert_allclose(out_pt.iou_scores[0].numpy(), want_pt_iou, atol=1e-3)


def test_round_trip_official_samjax_hf_samjax_official_is_bit_exact(exported, tiny_pair):
  sam = tiny_pair[0]
  back = torch.load(exported["back.pth"], weights_only=True)
  build_official_sam(tiny_pair[1].config).load_state_dict(back, strict=True)
  official = sam.state_dict()
  assert set(back) == set(official)
  for k, v in official.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k].numpy(), v.numpy()), k
  with open(os.path.join(exported["back"], "samjax_model.json")) as f:
    assert json.load(f)["config"]["encoder_embed_dim"] == 96


def test_from_hf_reads_a_folder_transformers_saved(hf_model, tiny_pair, tmp_path):
  """A folder written by transformers itself (no samjax marker, HF's own
  config.json) imports to the same weights."""
  from samjax.interop import state_dict_from_params
  from samjax.loading import load_config_and_params
  model, _ = hf_model
  saved = str(tmp_path / "saved_by_hf")
  model.save_pretrained(saved)
  assert not os.path.exists(os.path.join(saved, "samjax_export.json"))
  out = str(tmp_path / "model")
  assert main(["convert", "--from-hf", saved, "--out", out, "--variant", "vit_tiny"]) == 0
  config, params = load_config_and_params(out)
  assert config.same_architecture(tiny_pair[1].config)
  sd = state_dict_from_params(params, config)
  for k, v in tiny_pair[0].state_dict().items():
    assert np.array_equal(sd[k], v.numpy()), k


def test_to_torch_safetensors_loads_strict_and_equals_pth(exported, tiny_pair, tmp_path,
                                                          capsys):
  out = str(tmp_path / "sam.safetensors")
  assert main(["convert", "--to-torch", exported["model"], "--out", out,
               "--format", "safetensors"]) == 0
  assert os.path.isfile(out + ".json")
  sd = safetensors_torch.load_file(out)
  rebuilt = build_official_sam(tiny_pair[1].config)
  rebuilt.load_state_dict(sd, strict=True)
  pth = torch.load(exported["back.pth"], weights_only=True)
  assert set(sd) == set(pth)
  for k, v in pth.items():
    assert torch.equal(sd[k], v), k
  # Read back as a checkpoint anywhere a .pth is (load_sam, --from-torch).
  from samjax.interop.torch_io import load_state_dict
  back = load_state_dict(out)
  assert all(np.array_equal(back[k], v.numpy()) for k, v in pth.items())
  assert main(["convert", "--from-torch", out, "--out", str(tmp_path / "from_st")]) == 0
  # Refuses to clobber without --overwrite; --format only goes with --to-torch.
  capsys.readouterr()
  assert main(["convert", "--to-torch", exported["model"], "--out", out,
               "--format", "safetensors"]) == 1
  assert "exists (pass --overwrite" in capsys.readouterr().err
  assert main(["convert", "--to-hf", exported["model"], "--out", str(tmp_path / "x"),
               "--format", "safetensors"]) == 2


def test_cli_errors_are_one_line(exported, tmp_path, capsys):
  def err_of(argv):
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err

  empty = tmp_path / "empty"
  empty.mkdir()
  err = err_of(["convert", "--from-hf", str(empty), "--out", str(tmp_path / "m")])
  assert "not a Hugging Face model folder (no config.json)" in err
  err = err_of(["convert", "--from-hf", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
  assert "no such folder" in err
  not_sam = tmp_path / "bert"
  not_sam.mkdir()
  (not_sam / "config.json").write_text(json.dumps({"model_type": "bert"}))
  err = err_of(["convert", "--from-hf", str(not_sam), "--out", str(tmp_path / "m")])
  assert "not a Hugging Face SAM model config (model_type 'bert'" in err
  assert not (tmp_path / "m").exists()
  # --to-hf never replaces a folder it did not write, even with --overwrite.
  (not_sam / "keep.txt").write_text("x")
  err = err_of(["convert", "--to-hf", exported["model"], "--out", str(not_sam)])
  assert "exists and is not empty (pass --overwrite" in err
  err = err_of(["convert", "--to-hf", exported["model"], "--out", str(not_sam),
                "--overwrite"])
  assert "not a Hugging Face export samjax wrote" in err
  assert (not_sam / "keep.txt").read_text() == "x"


def test_missing_safetensors_is_a_clear_error(exported, tmp_path, capsys, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "safetensors", None)  # `import safetensors` fails
  capsys.readouterr()
  assert main(["convert", "--to-hf", exported["model"], "--out", str(tmp_path / "hf")]) == 1
  assert "pip install safetensors" in capsys.readouterr().err
  assert not (tmp_path / "hf").exists()

"""`samjax convert` both directions, through the real CLI entry point."""

import torch

from samjax.cli import main
from samjax.interop import build_official_sam
from samjax.interop.torch_io import save_state_dict
from samjax.loading import load_config_and_params


def test_convert_from_and_to_torch(tiny_pair, tmp_path, capsys):
  sam, model, _ = tiny_pair
  src = str(tmp_path / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, src)
  out_dir = str(tmp_path / "model")
  assert main(["convert", "--from-torch", src, "--variant", "vit_tiny", "--out", out_dir]) == 0
  config, _ = load_config_and_params(out_dir)
  assert config.same_architecture(model.config)
  back = str(tmp_path / "back.pth")
  assert main(["convert", "--to-torch", out_dir, "--out", back]) == 0
  sd = torch.load(back, weights_only=True)
  rebuilt = build_official_sam(model.config)
  rebuilt.load_state_dict(sd, strict=True)
  for k, v in sam.state_dict().items():
    assert torch.equal(sd[k], v), k
  # Refuses to clobber an existing directory without --overwrite.
  assert main(["convert", "--from-torch", src, "--out", out_dir]) == 1
  assert "exists and is not empty" in capsys.readouterr().err
  assert main(["convert", "--from-torch", src, "--out", out_dir, "--overwrite"]) == 0


def test_convert_reports_variant_mismatch(tiny_pair, tmp_path, capsys):
  sam, _, _ = tiny_pair
  src = str(tmp_path / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, src)
  rc = main(["convert", "--from-torch", src, "--variant", "vit_h", "--out",
             str(tmp_path / "x")])
  assert rc == 1
  err = capsys.readouterr().err
  assert "--variant vit_h" in err and "embed dim 96" in err

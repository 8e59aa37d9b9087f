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


def test_convert_never_clobbers_what_it_did_not_write(tiny_pair, tmp_path, capsys):
  """--to-torch refuses an existing .pth without --overwrite; --overwrite
  replaces only a samjax model directory, and only once the new one is
  complete (a failed write leaves the old one as it was)."""
  import os
  from unittest import mock

  import orbax.checkpoint as ocp
  sam, _, _ = tiny_pair
  src = str(tmp_path / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, src)
  model_dir = str(tmp_path / "model")
  assert main(["convert", "--from-torch", src, "--out", model_dir]) == 0
  pth = str(tmp_path / "existing.pth")
  with open(pth, "wb") as f:
    f.write(b"user data")
  assert main(["convert", "--to-torch", model_dir, "--out", pth]) == 1
  assert "exists (pass --overwrite" in capsys.readouterr().err
  with open(pth, "rb") as f:
    assert f.read() == b"user data"
  assert main(["convert", "--to-torch", model_dir, "--out", pth, "--overwrite"]) == 0
  assert oct(os.stat(pth).st_mode & 0o777) != oct(0o600)  # umask, not mkstemp's 0600
  # A folder samjax did not write survives --overwrite.
  user_dir = tmp_path / "photos"
  user_dir.mkdir()
  (user_dir / "a.jpg").write_bytes(b"x")
  assert main(["convert", "--from-torch", src, "--out", str(user_dir), "--overwrite"]) == 1
  assert "not a samjax model directory" in capsys.readouterr().err
  assert (user_dir / "a.jpg").read_bytes() == b"x"
  # A write that fails midway leaves the old model directory intact and loadable.
  before = sorted(os.listdir(model_dir))
  with mock.patch.object(ocp.StandardCheckpointer, "save", side_effect=OSError("disk full")):
    assert main(["convert", "--from-torch", src, "--out", model_dir, "--overwrite"]) == 1
  assert sorted(os.listdir(model_dir)) == before
  load_config_and_params(model_dir)
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_malformed_sidecar_is_named(tiny_pair, tmp_path, capsys):
  sam, _, _ = tiny_pair
  src = str(tmp_path / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, src)
  for text in ("{not json", '{"other": 1}'):
    with open(src + ".json", "w") as f:
      f.write(text)
    assert main(["convert", "--from-torch", src, "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "tiny.pth.json: not a samjax export sidecar" in err and len(err.splitlines()) == 1

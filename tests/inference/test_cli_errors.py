"""CLI errors are for people: one line, exit 1, no traceback (unless --debug),
and for `segment` / `amg` every output path is checked before the model runs."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import skimage.data
from PIL import Image

import samjax
from data_pipelines import atomic_io
from samjax.cli import DEBUG_ENV, main
from samjax.commands import segment as segment_cmd


@pytest.fixture(scope="module")
def checkpoint(tiny_official_pth):
  return tiny_official_pth


@pytest.fixture
def image(tmp_path):
  path = tmp_path / "img.jpg"
  # 64x64 like the 16-bit test's image: one compiled decode serves both.
  Image.fromarray(skimage.data.chelsea()).resize((64, 64)).save(path)
  return path


@pytest.fixture
def no_model(monkeypatch):
  """Makes loading a model an error the test sees: outputs must fail first."""
  calls = []
  monkeypatch.setattr(samjax, "load_sam", lambda *a, **k: calls.append(a) or 1 / 0)
  yield
  assert calls == [], "the model was loaded before the output paths were checked"


def _one_line_error(capsys, verb, *needles) -> str:
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err and err.count("\n") == 0, err
  assert err.startswith(f"samjax {verb}: error: "), err
  for n in needles:
    assert n in err, err
  return err


def _unwritable(kind: str, tmp_path, monkeypatch):
  """A folder files cannot be created in. Root ignores permission bits, so
  "read-only" also answers no from os.access (what ensure_dir consults) for
  that folder: the same answer a read-only mount gives root."""
  if kind == "a file":
    (tmp_path / "file").write_text("x")
    return tmp_path / "file"
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  real = os.access
  monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.fspath(p) == str(ro)
                      else real(p, mode, *a, **k))
  return ro


def _restore(tmp_path):
  """Lets pytest delete the read-only folder again."""
  if (tmp_path / "ro").exists():
    (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_amg_unwritable_out_is_one_line_before_the_model(checkpoint, image, tmp_path,
                                                         monkeypatch, capsys, no_model, kind):
  out = _unwritable(kind, tmp_path, monkeypatch)
  try:
    rc = main(["amg", "--checkpoint", checkpoint, "--images", str(image), "--out", str(out)])
    assert rc == 1
    why = "exists and is not a folder" if kind == "a file" else "not writable"
    _one_line_error(capsys, "amg", f"--out {out}", why)
  finally:
    _restore(tmp_path)


@pytest.mark.parametrize("flag, where, why", [
    ("--out", "folder", "is a folder"),
    ("--out", "under a file", "exists and is not a folder"),
    ("--json", "under a file", "exists and is not a folder"),
    ("--out", "read-only", "not writable"),
    ("--json", "read-only", "not writable"),
    ("--out", "bad extension", "cannot tell an image format"),
    ("--json", "same as --out", "same file"),
])
def test_segment_output_paths_are_checked_before_the_model(checkpoint, image, tmp_path,
                                                           monkeypatch, capsys, no_model,
                                                           flag, where, why):
  paths = {"--out": str(tmp_path / "o.png"), "--json": str(tmp_path / "o.json")}
  if where == "folder":
    bad = tmp_path / "dir"
    bad.mkdir()
  elif where == "under a file":
    bad = _unwritable("a file", tmp_path, monkeypatch) / "o.png"
  elif where == "read-only":
    bad = _unwritable("read-only", tmp_path, monkeypatch) / "o.png"
  elif where == "bad extension":
    bad = tmp_path / "o.xyz"
  else:
    bad = paths["--out"]
  paths[flag] = str(bad)
  try:
    rc = main(["segment", "--checkpoint", checkpoint, "--image", str(image), "--point",
               "10,10", "--out", paths["--out"], "--json", paths["--json"]])
    assert rc == 1
    _one_line_error(capsys, "segment", f"{flag} {bad}", why)
  finally:
    _restore(tmp_path)
  assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "o.json")


def test_segment_oversized_image_is_one_line(checkpoint, image, tmp_path, monkeypatch,
                                             capsys, no_model):
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2 * 1000
  rc = main(["segment", "--checkpoint", checkpoint, "--image", str(image), "--point",
             "10,10", "--out", str(tmp_path / "o.png")])
  assert rc == 1
  _one_line_error(capsys, "segment", f"cannot read image {image}: too large to decode")


def test_segment_full_disk_leaves_no_partial_file_and_fails(checkpoint, image, tmp_path,
                                                            monkeypatch, capsys):
  """ENOSPC while writing --json: exit 1, one line; --out is complete (or
  absent), never truncated, and no temp file is left."""
  real = atomic_io.atomic_writer

  def full_disk_for_json(path, mode="wb", encoding=None):
    if str(path).endswith(".json"):
      raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, mode, encoding)

  monkeypatch.setattr(atomic_io, "atomic_writer", full_disk_for_json)
  out, js = tmp_path / "o.png", tmp_path / "o.json"
  rc = main(["segment", "--checkpoint", checkpoint, "--image", str(image), "--point",
             "30,20", "--out", str(out), "--json", str(js)])
  assert rc == 1
  _one_line_error(capsys, "segment", "No space left on device", "--debug")
  assert sorted(os.listdir(tmp_path)) == ["img.jpg", "o.png"]
  with Image.open(out) as im:
    im.load()  # whole
    assert im.size == (64, 64)


def test_segment_reads_16_bit_png_like_every_command(checkpoint, tmp_path, capsys):
  """The 16-bit PNG that PIL clips to white: segment sees the scaled pixels."""
  from samjax.inference.image_io import read_image
  photo = skimage.data.camera()[::8, ::8].astype(np.uint16) * 257   # 64x64, full range
  path = tmp_path / "deep.png"
  Image.fromarray(photo).save(path)
  assert np.asarray(Image.open(path).convert("RGB")).mean() > 250  # PIL alone: white
  np.testing.assert_array_equal(read_image(str(path))[..., 0], photo // 257)
  rc = main(["segment", "--checkpoint", checkpoint, "--image", str(path), "--point",
             "30,30", "--out", str(tmp_path / "o.png")])
  assert rc == 0, capsys.readouterr().err
  with Image.open(tmp_path / "o.png") as im:
    assert np.asarray(im).min() < 200  # not a white picture


# --- main(): unexpected errors -------------------------------------------------------------

def _raising(exc):
  def run(args):
    raise exc
  return run


def test_unexpected_error_is_one_line_with_type(monkeypatch, capsys):
  monkeypatch.delenv(DEBUG_ENV, raising=False)
  monkeypatch.setattr(segment_cmd, "run", _raising(RuntimeError("boom\n  on two lines")))
  argv = ["segment", "--checkpoint", "c", "--image", "i", "--point", "1,1", "--out", "o.png"]
  assert main(argv) == 1
  err = _one_line_error(capsys, "segment", "RuntimeError: boom on two lines", "--debug")
  assert err.count("samjax") == 1


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
  monkeypatch.setattr(segment_cmd, "run", _raising(RuntimeError("boom")))
  argv = ["segment", "--checkpoint", "c", "--image", "i", "--point", "1,1", "--out", "o.png"]
  if how == "flag":
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    argv = ["--debug", *argv]
  else:
    monkeypatch.setenv(DEBUG_ENV, "1")
  with pytest.raises(RuntimeError, match="boom"):
    main(argv)


def test_handled_errors_keep_their_text_and_ctrl_c_is_130(monkeypatch, capsys):
  monkeypatch.delenv(DEBUG_ENV, raising=False)
  argv = ["segment", "--checkpoint", "c", "--image", "i", "--point", "1,1", "--out", "o.png"]
  monkeypatch.setattr(segment_cmd, "run", _raising(ValueError("bad --thing")))
  assert main(argv) == 1
  assert capsys.readouterr().err == "samjax segment: error: bad --thing\n"
  monkeypatch.setattr(segment_cmd, "run", _raising(KeyboardInterrupt()))
  assert main(argv) == 130
  assert capsys.readouterr().err == "samjax segment: interrupted\n"

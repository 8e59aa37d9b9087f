"""`samjax amg` faults: nothing lost, nothing half-written, nothing redone twice.

Each test injects a fault (a kill -9 in the middle of a write, outputs an
older run or a full disk left damaged, an image PIL refuses) and asserts what
is on disk afterwards: a resumed run redoes exactly the damaged images and
the folder ends byte for byte equal to an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from data_pipelines import atomic_io
from samjax.cli import main
from samjax.inference.image_io import read_image
from tests.inference.amg_helpers import KILLING_RUNNER, SETTINGS, STEMS, assert_equal_folders

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tiny_official_pth):
  return tiny_official_pth


@pytest.fixture(scope="module")
def amg(checkpoint):
  """``amg(images, out, *flags)``: `samjax amg` in this process, its exit status."""
  def run(images, out, *extra) -> int:
    return main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out",
                 str(out), *SETTINGS, *extra])
  return run


@pytest.fixture(scope="module")
def images(amg_images):
  return amg_images


@pytest.fixture(scope="module")
def reference(amg_reference):
  """An uninterrupted --copy-images run: what every resumed run must equal."""
  return amg_reference


def _mtimes(d) -> dict[str, int]:
  return {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in os.listdir(d)}


def test_damaged_outputs_are_redone_exactly(amg, images, reference, tmp_path, capsys):
  """What a crashed older version, a full disk or a copy tool leaves: a
  truncated JSON, a 0-byte JSON, a truncated image copy, temp files."""
  out = tmp_path / "out"
  shutil.copytree(reference, out)
  j1 = (out / "sa_1.json").read_bytes()
  (out / "sa_1.json").write_bytes(j1[:len(j1) // 2])           # cut mid-write
  (out / "sa_2.json").write_bytes(b"")                         # created, never written
  c3 = (out / "sa_3.jpg").read_bytes()
  (out / "sa_3.jpg").write_bytes(c3[:len(c3) // 2])            # copy cut short
  (out / f"sa_4.json{atomic_io.TEMP_MARKER}0123abcd").write_bytes(b'{"ima')
  (out / f"sa_3.jpg{atomic_io.TEMP_MARKER}89abcdef").write_bytes(c3[:10])
  other = out / f"notes.json{atomic_io.TEMP_MARKER}deadbeef"  # not this run's: kept
  other.write_bytes(b"x")
  # Let the rewritten files' mtimes differ from the untouched ones'.
  old = {n: t - 10**9 for n, t in _mtimes(out).items()}
  for n, t in old.items():
    os.utime(out / n, ns=(t, t))
  capsys.readouterr()
  assert amg(images, out, "--copy-images") == 0
  o, e = capsys.readouterr()
  assert "2 image(s) labelled" in o and "2 redone" in o, o
  assert "1 image copies repaired" in o and "1 already done" in o, o
  assert "redoing sa_1.jpg: sa_1.json is unreadable" in e, e
  assert "redoing sa_2.jpg: sa_2.json is unreadable" in e, e
  assert "redoing sa_3.jpg: sa_3.jpg is damaged" in e, e
  assert "removed 2 temp file(s)" in e, e
  changed = {n for n, t in _mtimes(out).items() if t != old.get(n)}
  # Exactly the damaged files were rewritten (sa_3's JSON was fine: kept).
  assert changed == {"sa_1.json", "sa_1.jpg", "sa_2.json", "sa_2.jpg", "sa_3.jpg"}, changed
  other.unlink()
  assert_equal_folders(out, reference)


def test_only_copies_to_repair_needs_no_model(amg, images, reference, tmp_path, capsys,
                                              monkeypatch):
  out = tmp_path / "out"
  shutil.copytree(reference, out)
  os.remove(out / "sa_2.jpg")  # e.g. a first run without --copy-images
  import samjax
  monkeypatch.setattr(samjax, "load_sam", lambda *a, **k: pytest.fail("model loaded"))
  assert amg(images, out, "--copy-images") == 0
  assert "1 image copies repaired" in capsys.readouterr().out
  assert_equal_folders(out, reference)


def test_foreign_or_schema_less_json_is_not_trusted(amg, images, reference, tmp_path, capsys):
  out = tmp_path / "out"
  shutil.copytree(reference, out)
  (out / "sa_1.json").write_text(json.dumps({"image": {"file_name": "sa_1.jpg"}}))
  doc = json.loads((out / "sa_2.json").read_text())
  doc["image"]["file_name"] = "other.jpg"
  (out / "sa_2.json").write_text(json.dumps(doc))
  (out / "sa_3.json").write_text("[]")
  assert amg(images, out, "--copy-images") == 0
  o, e = capsys.readouterr()
  assert "3 image(s) labelled" in o and "3 redone" in o, o
  assert "no complete 'image' record" in e and "describes 'other.jpg'" in e, e
  assert_equal_folders(out, reference)


# One real kill (a subprocess: ~10 s of start-up and compiling); where the
# JSON is written relative to the other files is tested in-process below.
@pytest.mark.parametrize("suffix", [".jpg"])
def test_kill_mid_write_then_rerun_equals_uninterrupted(amg, checkpoint, images, reference,
                                                        tmp_path, capsys, suffix):
  """kill -9 halfway through copying image 2 (the old code had written its
  JSON already, so the truncated copy counted as done)."""
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-c", KILLING_RUNNER, suffix, "2", "amg", "--checkpoint",
       checkpoint, "--images", str(images), "--out", str(out), *SETTINGS,
       "--copy-images"], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-3000:]
  names = set(os.listdir(out))
  temps = {n for n in names if atomic_io.TEMP_MARKER in n}
  assert temps == {n for n in temps if n.startswith(f"sa_2{suffix}{atomic_io.TEMP_MARKER}")}
  assert len(temps) == 1  # the write the kill cut short; never under its real name
  # Image 1 is complete; image 2 has no JSON (and its copy, if any, is whole).
  done = {"sa_1.jpg", "sa_1.json"} | ({"sa_2.jpg"} if suffix == ".json" else set())
  assert names - temps == done, names
  for n in done:
    assert (out / n).read_bytes() == (reference / n).read_bytes(), n
  mtime = {n: os.stat(out / n).st_mtime_ns for n in ("sa_1.jpg", "sa_1.json")}
  assert amg(images, out, "--copy-images") == 0
  assert "3 image(s) labelled" in capsys.readouterr().out
  assert {n: os.stat(out / n).st_mtime_ns for n in mtime} == mtime  # not redone
  assert_equal_folders(out, reference)


def test_json_is_written_after_the_copy_and_overlay(amg, images, tmp_path, capsys,
                                                    monkeypatch):
  """A full disk (ENOSPC) on image 2's JSON, its last file: image 2's copy and
  overlay are on disk but it is not done, so the rerun redoes it; the error
  is one line naming the image; image 1 is complete."""
  import errno
  out = tmp_path / "out"
  written, real = [], atomic_io.atomic_writer

  def full_disk_on_second_json(path, mode="wb", encoding=None):
    written.append(os.path.basename(path))
    if os.path.basename(path) == "sa_2.json":
      raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, mode, encoding)

  monkeypatch.setattr(atomic_io, "atomic_writer", full_disk_on_second_json)
  capsys.readouterr()
  assert amg(images, out, "--copy-images", "--overlays") == 1
  e = capsys.readouterr().err.strip().splitlines()[-1]
  assert e.startswith("samjax amg: error: ") and "sa_2.jpg" in e and "No space left" in e, e
  assert written == ["sa_1.jpg", "sa_1.png", "sa_1.json", "sa_2.jpg", "sa_2.png", "sa_2.json"]
  assert sorted(os.listdir(out)) == ["sa_1.jpg", "sa_1.json", "sa_1.png", "sa_2.jpg",
                                     "sa_2.png"]
  monkeypatch.undo()
  assert amg(images, out, "--copy-images", "--overlays") == 0
  assert "3 image(s) labelled" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == sorted(f"{s}.{e}" for s in STEMS
                                           for e in ("jpg", "json", "png"))


def test_oversized_image_is_skipped_with_reason_and_run_goes_on(amg, images, tmp_path, capsys,
                                                                monkeypatch):
  folder = tmp_path / "imgs"
  shutil.copytree(images, folder)
  Image.fromarray(skimage.data.coffee()).save(folder / "huge.jpg")  # 400x600
  # PIL refuses above 2x MAX_IMAGE_PIXELS: 240000 > 2 * 50000 > 48 * 64.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
  out = tmp_path / "out"
  assert amg(folder, out) == 0
  o, e = capsys.readouterr()
  assert "4 image(s) labelled" in o and "1 failed" in o, o
  assert "skipped" in e and "huge.jpg" in e and "too large to decode" in e, e
  assert sorted(os.listdir(out)) == sorted(f"{s}.json" for s in STEMS)
  # Alone, it is a one-line error and exit 1 (nothing could be processed).
  assert amg(folder / "huge.jpg", tmp_path / "o2") == 1
  e = capsys.readouterr().err
  assert "Traceback" not in e and "too large to decode" in e


def test_exif_rotated_jpeg_is_labelled_and_copied_upright(amg, images, tmp_path, capsys):
  """The JSON's masks are in the upright frame; the copy the converter reads
  must be upright too (it does not apply EXIF), so it is re-encoded."""
  folder = tmp_path / "imgs"
  folder.mkdir()
  stored = np.asarray(Image.open(images / "sa_1.jpg"))  # 48x64
  exif = Image.Exif()
  exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to view": stored as 64x48
  Image.fromarray(np.ascontiguousarray(np.rot90(stored, k=-1))).save(
      folder / "sa_9.jpg", quality=95, exif=exif)
  upright = read_image(str(folder / "sa_9.jpg"))
  assert upright.shape == (48, 64, 3)
  out = tmp_path / "out"
  assert amg(folder, out, "--copy-images") == 0
  doc = json.loads((out / "sa_9.json").read_text())
  assert (doc["image"]["height"], doc["image"]["width"]) == (48, 64)
  with Image.open(out / "sa_9.jpg") as im:
    assert im.size == (64, 48) and im.getexif().get(0x0112) in (None, 1)
    copy = np.asarray(im.convert("RGB")).astype(np.int16)
  assert np.abs(copy - upright).mean() < 4  # the same picture, re-encoded at q95
  # The re-encoded copy counts as complete on resume.
  capsys.readouterr()
  assert amg(folder, out, "--copy-images") == 0
  assert "already done" in capsys.readouterr().out

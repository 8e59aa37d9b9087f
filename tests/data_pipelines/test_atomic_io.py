"""atomic_io: whole-or-nothing file writes (content, temp files, permissions, failures)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from data_pipelines import atomic_io


def _listing(directory) -> list[str]:
  return sorted(os.listdir(directory))


def test_bytes_text_json_land(tmp_path):
  atomic_io.write_bytes(tmp_path / "a.bin", b"\x00\xffdata")
  atomic_io.write_text(tmp_path / "b.txt", "héllo\nwörld\n")
  atomic_io.write_json(str(tmp_path / "c.json"), {"b": 1, "a": [1, 2]}, indent=1,
                       sort_keys=True, end="\n")
  assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffdata"
  assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\nwörld\n"
  # Exactly json.dumps's bytes: the converter's manifests stay byte-identical.
  assert (tmp_path / "c.json").read_text() == json.dumps(
      {"b": 1, "a": [1, 2]}, indent=1, sort_keys=True) + "\n"
  assert _listing(tmp_path) == ["a.bin", "b.txt", "c.json"]  # no temp files left


def test_replaces_existing_file_atomically(tmp_path):
  path = tmp_path / "doc.json"
  atomic_io.write_json(path, {"v": 1})
  with open(path) as reader:  # a reader that opened the old file keeps it whole
    atomic_io.write_json(path, {"v": 2})
    assert json.load(reader) == {"v": 1}
  assert json.loads(path.read_text()) == {"v": 2}
  assert _listing(tmp_path) == ["doc.json"]


def test_streamed_writer_and_directory_fsync(tmp_path, monkeypatch):
  synced = []
  monkeypatch.setattr(atomic_io, "fsync_directory", synced.append)
  with atomic_io.atomic_writer(tmp_path / "big.bin") as f:
    for i in range(3):
      f.write(bytes([i]) * 4)
    # Nothing at the target until the block finishes.
    assert not (tmp_path / "big.bin").exists()
  assert (tmp_path / "big.bin").read_bytes() == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
  assert synced == [str(tmp_path)]  # the rename itself is made durable


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_mode_follows_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    atomic_io.write_text(tmp_path / "new.txt", "x")
    atomic_io.write_text(tmp_path / "new.txt", "y")  # replacing gives the same mode
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o666 & ~umask


def test_failure_inside_write_keeps_old_file(tmp_path):
  path = tmp_path / "manifest.json"
  atomic_io.write_text(path, "old\n")
  with pytest.raises(RuntimeError, match="disk on fire"), atomic_io.atomic_writer(path, "w") as f:
    f.write("half of the new conte")
    raise RuntimeError("disk on fire")
  assert path.read_text() == "old\n"
  assert _listing(tmp_path) == ["manifest.json"]


def test_unencodable_json_keeps_old_file(tmp_path):
  path = tmp_path / "doc.json"
  atomic_io.write_json(path, {"ok": True})
  with pytest.raises(TypeError):
    atomic_io.write_json(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"ok": True}
  assert _listing(tmp_path) == ["doc.json"]


def test_failed_rename_keeps_old_file(tmp_path, monkeypatch):
  path = tmp_path / "doc.txt"
  atomic_io.write_text(path, "old")

  def broken_replace(src, dst):
    raise OSError("rename failed")
  monkeypatch.setattr(atomic_io.os, "replace", broken_replace)
  with pytest.raises(OSError, match="rename failed"):
    atomic_io.write_text(path, "new")
  monkeypatch.undo()
  assert path.read_text() == "old"
  assert _listing(tmp_path) == ["doc.txt"]


def test_temp_name_carries_the_marker(tmp_path, monkeypatch):
  """A temp file left by a killed run is recognisable (the converter deletes
  such leftovers by ``TEMP_MARKER``) and sits beside its target."""
  seen = []
  real_replace = os.replace

  def spy(src, dst):
    seen.append(src)
    real_replace(src, dst)
  monkeypatch.setattr(atomic_io.os, "replace", spy)
  atomic_io.write_bytes(tmp_path / "shard.done.json", b"{}")
  (tmp,) = seen
  assert os.path.dirname(tmp) == str(tmp_path)
  assert os.path.basename(tmp).startswith("shard.done.json" + atomic_io.TEMP_MARKER)


def test_rejects_other_modes(tmp_path):
  with pytest.raises(ValueError, match="mode"), atomic_io.atomic_writer(tmp_path / "x", "a"):
    pass
  assert _listing(tmp_path) == []

"""The resumable per-image log: kills, damaged files, other settings, old logs.

The same code runs on buckets; ``tests/storage/test_eval_stores.py`` runs
it against real gs:// and s3:// servers.
"""

import json
import pathlib

import pytest

from data_pipelines.atomic_io import TEMP_MARKER
from samjax.evaluation.per_image_log import (
  PerImageLog,
  PerImageLogError,
  image_file_name,
  legacy_log_path,
  log_path_for,
  read_records,
)


def test_log_path_sits_next_to_the_results_file(tmp_path):
  assert log_path_for(str(tmp_path / "r.json")) == str(tmp_path / "r.images")
  assert log_path_for(str(tmp_path / "r.out")) == str(tmp_path / "r.out.images")
  assert log_path_for("gs://b/run/r.json") == "gs://b/run/r.images"


def test_reopen_keeps_finished_images_and_refuses_other_settings(tmp_path):
  path = str(tmp_path / "sub" / "log.images")
  log = PerImageLog(path, {"protocol": "points", "max_points": (9,)})
  log.append(7, {"ious": [0.5, 0.75]})
  log.append("a/b c", {"ious": [1.0]})  # any id: the file name is percent-encoded
  with pytest.raises(PerImageLogError, match="already"):
    log.append("7", {})
  assert sorted(p.name for p in pathlib.Path(path).iterdir()) == [
      "image-7.json", "image-a%2Fb%20c.json", "settings.json"]
  again = PerImageLog(path, {"max_points": [9], "protocol": "points"})  # same, canonical
  assert 7 in again and "a/b c" in again and len(again) == 2
  assert sorted(r["ious"] for r in again.records()) == [[0.5, 0.75], [1.0]]
  before = {p.name: p.read_bytes() for p in pathlib.Path(path).iterdir()}
  with pytest.raises(PerImageLogError, match="other settings"):
    PerImageLog(path, {"protocol": "points", "max_points": [5]})
  # Refused without touching anything.
  assert {p.name: p.read_bytes() for p in pathlib.Path(path).iterdir()} == before


def test_what_a_kill_leaves_is_redone_and_cleaned(tmp_path):
  """A kill mid-write leaves the image's temp file, never its file: the
  reopened log does not count that image and removes the temp file."""
  path = tmp_path / "log.images"
  log = PerImageLog(str(path), {"p": 1})
  log.append("a", {"v": 1})
  temp = path / (image_file_name("b") + TEMP_MARKER + "0123abcd")
  temp.write_bytes(b'{"image": "b", "v"')
  again = PerImageLog(str(path), {"p": 1})
  assert "a" in again and "b" not in again and not temp.exists()
  again.append("b", {"v": 2})
  assert sorted(r["image"] for r in read_records(str(path))) == ["a", "b"]


def test_processes_sharing_a_log_leave_each_others_temp_files(tmp_path):
  """Several processes write one log: a process removes only the temp files
  of its own images (another may be writing the rest, or settings.json);
  ``refresh``, once all have finished, reads their images and sweeps all."""
  path = tmp_path / "log.images"
  first = PerImageLog(str(path), {"p": 1}, owns={"a", "c"}.__contains__)
  temps = {k: path / (image_file_name(k) + TEMP_MARKER + "0123abcd") for k in "abc"}
  temps["settings"] = path / ("settings.json" + TEMP_MARKER + "89abcdef")
  for temp in temps.values():
    temp.write_bytes(b"{")
  second = PerImageLog(str(path), {"p": 1}, owns={"b", "d/e"}.__contains__)
  assert sorted(k for k, t in temps.items() if t.exists()) == ["a", "c", "settings"]
  second.append("b", {"v": 2})
  second.append("d/e", {"v": 3})
  first.append("a", {"v": 1})
  first.refresh()
  assert sorted(r["image"] for r in first.records()) == ["a", "b", "d/e"]
  assert not any(t.exists() for t in temps.values())


def test_damaged_files_are_refused_not_silently_dropped(tmp_path):
  path = tmp_path / "log.images"
  log = PerImageLog(str(path), {"p": 1})
  log.append("a", {"v": 1})
  log.append("b", {"v": 2})
  (path / image_file_name("a")).write_bytes(b'{"image": "a", "v"')  # not a whole write
  with pytest.raises(PerImageLogError, match=r"image-a\.json is damaged"):
    PerImageLog(str(path), {"p": 1})
  (path / image_file_name("a")).write_text(json.dumps({"image": "b", "v": 1}))
  with pytest.raises(PerImageLogError, match="holds image 'b', not 'a'"):
    PerImageLog(str(path), {"p": 1})
  (path / image_file_name("a")).unlink()
  (path / "settings.json").unlink()
  with pytest.raises(PerImageLogError, match="no settings.json"):
    PerImageLog(str(path), {"p": 1})
  (path / "settings.json").write_text("not json")
  with pytest.raises(PerImageLogError, match="not a samjax per-image log header"):
    PerImageLog(str(path), {"p": 1})


def test_an_older_one_file_log_still_counts(tmp_path):
  """``<out>.images.jsonl`` of earlier versions: its complete lines are
  finished images (a half line is not), its settings are checked."""
  path = str(tmp_path / "r.images")
  legacy = pathlib.Path(legacy_log_path(path))
  assert legacy.name == "r.images.jsonl"
  legacy.write_text('{"settings": {"p": 1}}\n{"image": "a", "v": 1}\n{"image": "b", "v')
  log = PerImageLog(path, {"p": 1})
  assert "a" in log and "b" not in log
  log.append("b", {"v": 2})
  assert sorted(r["image"] for r in PerImageLog(path, {"p": 1}).records()) == ["a", "b"]
  other = str(tmp_path / "o.images")
  pathlib.Path(legacy_log_path(other)).write_text('{"settings": {"p": 2}}\n')
  with pytest.raises(PerImageLogError, match="other settings"):
    PerImageLog(other, {"p": 1})

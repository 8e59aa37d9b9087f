"""The resumable per-image log: kills, corrupt lines and other settings."""

import json
import pathlib

import pytest

from samjax.evaluation.per_image_log import PerImageLog, PerImageLogError, log_path_for


def test_log_path_sits_next_to_the_results_file(tmp_path):
  assert log_path_for(str(tmp_path / "r.json")) == str(tmp_path / "r.images.jsonl")
  assert log_path_for(str(tmp_path / "r.out")) == str(tmp_path / "r.out.images.jsonl")


def test_reopen_keeps_finished_images_and_refuses_other_settings(tmp_path):
  path = str(tmp_path / "sub" / "log.jsonl")
  log = PerImageLog(path, {"protocol": "points", "max_points": (9,)})
  log.append(7, {"ious": [0.5, 0.75]})
  log.append("b", {"ious": [1.0]})
  with pytest.raises(PerImageLogError, match="already"):
    log.append("7", {})
  again = PerImageLog(path, {"max_points": [9], "protocol": "points"})  # same, canonical
  assert 7 in again and "b" in again and len(again) == 2
  assert [r["ious"] for r in again.records()] == [[0.5, 0.75], [1.0]]
  before = pathlib.Path(path).read_text()
  with pytest.raises(PerImageLogError, match="other settings"):
    PerImageLog(path, {"protocol": "points", "max_points": [5]})
  assert pathlib.Path(path).read_text() == before  # refused without touching the file


def test_a_half_written_last_line_is_cut_and_redone(tmp_path):
  path = str(tmp_path / "log.jsonl")
  log = PerImageLog(path, {"p": 1})
  log.append("a", {"v": 1})
  with open(path, "ab") as f:
    f.write(b'{"image": "b", "v"')  # what a kill -9 mid-write leaves
  again = PerImageLog(path, {"p": 1})
  assert again.dropped_partial_line and "a" in again and "b" not in again
  again.append("b", {"v": 2})
  lines = pathlib.Path(path).read_text().splitlines()
  assert [json.loads(x).get("image") for x in lines] == [None, "a", "b"]


def test_a_kill_before_the_header_was_complete_starts_over(tmp_path):
  path = str(tmp_path / "log.jsonl")
  with open(path, "wb") as f:
    f.write(b'{"setti')
  log = PerImageLog(path, {"p": 1})
  assert len(log) == 0
  assert json.loads(pathlib.Path(path).read_text().splitlines()[0]) == {"settings": {"p": 1}}


def test_a_corrupt_middle_line_is_refused_not_silently_dropped(tmp_path):
  path = str(tmp_path / "log.jsonl")
  log = PerImageLog(path, {"p": 1})
  log.append("a", {"v": 1})
  log.append("b", {"v": 2})
  data = pathlib.Path(path).read_bytes().replace(b'"a"', b'\x00a"')
  pathlib.Path(path).write_bytes(data)
  with pytest.raises(PerImageLogError, match="line 2 is corrupt"):
    PerImageLog(path, {"p": 1})
  pathlib.Path(path).write_bytes(b"not json\n")
  with pytest.raises(PerImageLogError, match="line 1 is not JSON"):
    PerImageLog(path, {"p": 1})

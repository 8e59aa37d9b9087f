"""Conversion faults: nothing lost, nothing half-written, no success for nothing.

Each test injects a fault (a killed converter, a damaged shard, a bad
argument, an unwritable folder) and asserts what is on disk afterwards; a
resumed conversion must equal an uninterrupted one byte for byte.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from data_pipelines import cli as data_cli
from data_pipelines import dataset_layout, sa1b_to_tfrecord, sample_data, storage, verify

REPO = pathlib.Path(__file__).resolve().parents[2]
QUIET = {"progress": False, "log": lambda *_: None}


def _files(d) -> dict[str, bytes]:
  return {n: pathlib.Path(d, n).read_bytes() for n in sorted(os.listdir(d))}


def _assert_same_conversion(out, ref):
  """``out`` holds exactly ``ref``'s files, byte for byte (no temp files)."""
  got, want = _files(out), _files(ref)
  assert sorted(got) == sorted(want)
  for n in want:
    assert got[n] == want[n], n


def _cli(*argv) -> int:
  parser = argparse.ArgumentParser()
  data_cli.register(parser.add_subparsers(dest="verb"))
  args = parser.parse_args(["data", *argv])
  return args.func(args)


def _one_line_error(capsys, *needles) -> str:
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err and err.count("\n") == 0, err
  assert err.startswith("samjax data "), err
  for n in needles:
    assert n in err, err
  return err


# --- 1. a killed converter leaves no workers behind -----------------------------------------

# `samjax data convert` without importing samjax (jax): the same verb function.
_RUNNER = """
import argparse, sys
from data_pipelines import cli
p = argparse.ArgumentParser()
cli.register(p.add_subparsers(dest="verb"))
a = p.parse_args(sys.argv[1:])
sys.exit(a.func(a))
"""


def _proc_stat(pid: int) -> list[str] | None:
  """Fields of /proc/<pid>/stat after the command name (state first), or None."""
  try:
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  return text.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
  out = []
  for d in os.listdir("/proc"):
    if d.isdigit() and (st := _proc_stat(int(d))) is not None and int(st[1]) == pid:
      out.append(int(d))
  return out


def _alive(pid: int) -> bool:
  st = _proc_stat(pid)
  return st is not None and st[0] not in ("Z", "X")  # a zombie has exited


def kill_and_check_workers(parent) -> None:
  """SIGKILLs the converter process ``parent`` (a Popen) and asserts that none
  of its child processes outlives it by more than 5 s."""
  children = _children(parent.pid)
  assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)
  os.kill(parent.pid, signal.SIGKILL)
  parent.wait()
  deadline = time.monotonic() + 5
  while (left := [p for p in children if _alive(p)]) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not left, f"processes outlived the killed converter: {left}"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_killed_converter_leaves_no_workers_and_resumes_exactly(sample_dir, converted_dir,
                                                                tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]), **{sa1b_to_tfrecord.FAULT_RECORD_DELAY: "0.25"})
  log = open(tmp_path / "log.txt", "wb")  # noqa: SIM115
  parent = subprocess.Popen(
      [sys.executable, "-c", _RUNNER, "data", "convert", "--src", sample_dir, "--out",
       str(out), "--shards", "3", "--workers", "2", "--no-progress"],
      env=env, stdout=log, stderr=subprocess.STDOUT)
  try:
    # Wait until a worker is mid-shard (its shard's temp file exists; the
    # parent's plan.json temp does not count), then kill -9 the converter
    # alone, as the OOM killer would.
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(dataset_layout.is_temp_file(n) and ".tfrecord.tmp-" in n
                                    for n in os.listdir(out))):
      assert parent.poll() is None, (tmp_path / "log.txt").read_text()
      assert time.monotonic() < deadline, "the conversion never started a shard"
      time.sleep(0.02)
    kill_and_check_workers(parent)
  finally:
    if parent.poll() is None:
      parent.kill()
      parent.wait()
    log.close()
  assert not (out / dataset_layout.MANIFEST).exists()  # it really was cut short
  m = sa1b_to_tfrecord.convert([sample_dir], str(out), 3, workers=1, **QUIET)
  assert m is not None
  _assert_same_conversion(out, converted_dir)


# --- 2. no success for nothing; arguments checked before anything is written --------------

def test_no_images_is_an_error(tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert _cli("convert", "--src", str(empty), "--out", str(tmp_path / "a"), "--shards", "1",
              "--no-progress") == 1
  _one_line_error(capsys, "no SA-1B images", str(empty))
  notes = tmp_path / "notes.txt"
  notes.write_text("not a tar\n" * 100)
  assert _cli("convert", "--src", str(notes), "--out", str(tmp_path / "b"), "--shards", "1",
              "--no-progress") == 1
  _one_line_error(capsys, "no SA-1B images", "unreadable_tar")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_all_images_unusable_is_an_error(tmp_path, capsys):
  src = tmp_path / "src"
  src.mkdir()
  jpg, meta = sample_data.make_pair(0, 48, 64, num_objects=2)
  with tarfile.open(src / "sa_000000.tar", "w") as tf:
    sample_data.add_member(tf, "sa_1.jpg", jpg[: len(jpg) // 3])  # cut short
    sample_data.add_member(tf, "sa_1.json", meta)
  out = tmp_path / "out"
  assert _cli("convert", "--src", str(src), "--out", str(out), "--shards", "1",
              "--no-progress") == 1
  err = _one_line_error(capsys, "no usable images", "all 1 were skipped")
  assert str(out) in err
  # The manifest still lists why each input was skipped.
  assert dataset_layout.load_manifest(str(out))["skipped_counts"] == {"corrupt_jpeg": 1}


@pytest.mark.parametrize("argv, needles", [
    (["--shards", "2", "--workers", "0"], ["--workers must be >= 1", "got 0"]),
    (["--shards", "2", "--workers", "-3"], ["--workers must be >= 1", "got -3"]),
    (["--shards", "0"], ["--shards must be >= 1"]),
    (["--shards", "11"], ["--shards 11", "10 image(s)"]),
    (["--shards", "2", "--only-shards", "2"], ["shard index 2 outside [0, 2)"]),
])
def test_bad_arguments_are_refused_before_writing(sample_dir, tmp_path, capsys, argv, needles):
  out = tmp_path / "out"
  assert _cli("convert", "--src", sample_dir, "--out", str(out), "--no-progress", *argv) == 1
  _one_line_error(capsys, *needles)
  assert not out.exists()


def test_one_worker_converts_in_process(sample_dir, tmp_path, monkeypatch):
  def no_pool(*a, **k):
    raise AssertionError("--workers 1 must not spawn processes")
  monkeypatch.setattr(sa1b_to_tfrecord.cf, "ProcessPoolExecutor", no_pool)
  out = tmp_path / "out"
  assert _cli("convert", "--src", sample_dir, "--out", str(out), "--shards", "2",
              "--workers", "1", "--no-progress") == 0
  assert verify.inspect(str(out))[1]


def test_make_sample_refuses_nothing(tmp_path, capsys):
  assert _cli("make-sample", "--out", str(tmp_path / "s"), "--images", "0") == 1
  _one_line_error(capsys, "--images and --per-tar must be >= 1")
  assert _cli("make-sample", "--out", str(tmp_path / "s"), "--per-tar", "0") == 1
  _one_line_error(capsys, "got 8 and 0")
  assert not (tmp_path / "s").exists()


# --- 3. a damaged finished shard is never trusted on resume ---------------------------------

def _flip(path, at):
  data = bytearray(path.read_bytes())
  data[at] ^= 0x01
  path.write_bytes(bytes(data))


def _damage(kind: str, shard: pathlib.Path):
  idx = shard.with_name(shard.name + ".idx")
  done = shard.with_name(dataset_layout.done_name(shard.name))
  if kind == "truncated shard":
    with open(shard, "r+b") as f:
      f.truncate(shard.stat().st_size - 7)
  elif kind == "bit-flipped shard":  # same size, same index: only the sha256 tells
    _flip(shard, shard.stat().st_size // 2)
  elif kind == "deleted index":
    idx.unlink()
  elif kind == "bit-flipped index":  # a digit changes, the file still parses
    _flip(idx, 0)
  elif kind == "empty done.json":
    done.write_bytes(b"")
  elif kind == "done.json of other inputs":
    done.write_text(done.read_text().replace('"plan_sha256": "', '"plan_sha256": "0'))
  elif kind == "done.json that is not an object":
    done.write_text("[1, 2]\n")
  elif kind == "shard without done.json":
    done.unlink()


@pytest.mark.parametrize("kind", [
    "truncated shard", "bit-flipped shard", "deleted index", "bit-flipped index",
    "empty done.json", "done.json of other inputs", "done.json that is not an object",
    "shard without done.json"])
def test_damaged_shard_is_rewritten_on_resume(sample_dir, converted_dir, tmp_path, kind,
                                              capsys):
  out = tmp_path / "out"
  shutil.copytree(converted_dir, out)
  names = [dataset_layout.shard_name(i, 3) for i in range(3)]
  _damage(kind, out / names[1])
  (out / (names[1] + ".tmp-0badf00d")).write_bytes(b"half a shard")  # a killed write
  before = {n: (out / n).stat().st_mtime_ns for n in (names[0], names[2])}
  assert sa1b_to_tfrecord.convert([sample_dir], str(out), 3, workers=1, **QUIET) is not None
  _assert_same_conversion(out, converted_dir)
  # The intact shards were checked and kept, not rewritten.
  assert {n: (out / n).stat().st_mtime_ns for n in before} == before
  assert _cli("inspect", str(out)) == 0
  assert "OK" in capsys.readouterr().out


def test_unreadable_plan_needs_overwrite(sample_dir, converted_dir, tmp_path, capsys):
  out = tmp_path / "out"
  shutil.copytree(converted_dir, out)
  (out / dataset_layout.PLAN).write_bytes(b"")
  assert _cli("convert", "--src", sample_dir, "--out", str(out), "--shards", "3",
              "--no-progress") == 1
  _one_line_error(capsys, "unreadable plan.json", "--overwrite")
  assert (out / dataset_layout.PLAN).read_bytes() == b""  # nothing touched
  assert sa1b_to_tfrecord.convert([sample_dir], str(out), 3, overwrite=True, **QUIET)
  _assert_same_conversion(out, converted_dir)


def test_corrupt_manifest_is_named_and_rebuilt(sample_dir, converted_dir, tmp_path, capsys):
  out = tmp_path / "out"
  shutil.copytree(converted_dir, out)
  (out / dataset_layout.MANIFEST).write_text('{"format": ')
  assert _cli("inspect", str(out)) == 1
  _one_line_error(capsys, str(out / dataset_layout.MANIFEST), "not valid JSON")
  assert sa1b_to_tfrecord.convert([sample_dir], str(out), 3, workers=1, **QUIET)
  _assert_same_conversion(out, converted_dir)


# --- 4. --overwrite deletes only what the converter wrote -----------------------------------

USER_FILES = {"notes.txt": b"mine", "sa1b-notes.txt": b"mine too",
              "keep.tmp-1234": b"a user's temp", "sa1b-00000-of-00002.tfrecord.orig": b"backup",
              "plan.json.bak": b"{}"}


def test_overwrite_removes_only_layout_files(sample_dir, converted_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  for n, data in USER_FILES.items():
    (out / n).write_bytes(data)
  sa1b_to_tfrecord.convert([sample_dir], str(out), 2, **QUIET)
  (out / (dataset_layout.shard_name(1, 2) + ".tmp-abc123")).write_bytes(b"killed write")
  listing = sorted(os.listdir(out))
  with pytest.raises(ValueError, match="--overwrite"):
    sa1b_to_tfrecord.convert([sample_dir], str(out), 3, **QUIET)
  assert sorted(os.listdir(out)) == listing  # refused: nothing touched
  sa1b_to_tfrecord.convert([sample_dir], str(out), 3, overwrite=True, **QUIET)
  for n, data in USER_FILES.items():
    assert (out / n).read_bytes() == data, n
  for n in USER_FILES:
    (out / n).unlink()
  _assert_same_conversion(out, converted_dir)  # old 2-shard files and temps are gone


def test_overwrite_cut_short_keeps_folder_consistent(sample_dir, converted_dir, tmp_path,
                                                     monkeypatch):
  """--overwrite deletes the manifest first and every done.json before any
  shard, and keeps the old plan until the end: a crash part-way never leaves
  a folder that claims a finished dataset or a shard that passes for done."""
  out = tmp_path / "out"
  sa1b_to_tfrecord.convert([sample_dir], str(out), 2, **QUIET)
  removed = []
  real_remove = storage.remove

  def remove_then_crash(path, missing_ok=True):
    if len(removed) == 3:
      raise OSError("disk gone")
    removed.append(os.path.basename(path))
    real_remove(path, missing_ok)

  monkeypatch.setattr(sa1b_to_tfrecord.storage, "remove", remove_then_crash)
  with pytest.raises(OSError, match="disk gone"):
    sa1b_to_tfrecord.convert([sample_dir], str(out), 3, overwrite=True, **QUIET)
  monkeypatch.undo()
  assert removed == [dataset_layout.MANIFEST] + [
      dataset_layout.done_name(dataset_layout.shard_name(i, 2)) for i in range(2)]
  with pytest.raises(ValueError, match="--overwrite"):  # the old plan still stands
    sa1b_to_tfrecord.convert([sample_dir], str(out), 3, **QUIET)
  sa1b_to_tfrecord.convert([sample_dir], str(out), 3, overwrite=True, **QUIET)
  _assert_same_conversion(out, converted_dir)


def test_resume_keeps_temp_files_it_did_not_write(sample_dir, tmp_path):
  """Temp-file cleanup is limited to the shards this run writes: another
  machine's --only-shards run into the same folder keeps its temp files."""
  out = tmp_path / "out"
  assert sa1b_to_tfrecord.convert([sample_dir], str(out), 3, only_shards=[0], **QUIET) is None
  other = out / (dataset_layout.shard_name(2, 3) + ".tmp-5eed")  # in flight elsewhere
  mine = out / (dataset_layout.shard_name(1, 3) + ".tmp-12345")  # left by a killed run
  for p in (other, mine):
    p.write_bytes(b"partial")
  assert sa1b_to_tfrecord.convert([sample_dir], str(out), 3, only_shards=[1], **QUIET) is None
  assert other.exists() and not mine.exists()


# --- 5. an unwritable output folder is one line, not a traceback ----------------------------

def _unwritable(kind: str, tmp_path) -> pathlib.Path:
  if kind == "under a file":
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "out"
  if kind == "is a file":
    (tmp_path / "out").write_text("x")
    return tmp_path / "out"
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  if os.access(ro, os.W_OK):  # root ignores the mode bits: "under a file" covers root
    ro.chmod(0o755)
    pytest.skip("permission bits do not stop this user (root)")
  return ro if kind == "read-only folder" else ro / "out"


@pytest.mark.parametrize("verb", ["convert", "make-sample"])
@pytest.mark.parametrize("kind", ["under a file", "is a file", "read-only folder",
                                  "under a read-only folder"])
def test_unwritable_output_is_one_line_error(sample_dir, tmp_path, capsys, verb, kind):
  out = _unwritable(kind, tmp_path)
  try:
    if verb == "convert":
      rc = _cli("convert", "--src", sample_dir, "--out", str(out), "--shards", "2",
                "--no-progress")
    else:
      rc = _cli("make-sample", "--out", str(out), "--images", "1", "--height", "32",
                "--width", "48")
    assert rc == 1
    _one_line_error(capsys, f"samjax data {verb}: error: {out}")
    if out.is_dir():
      assert os.listdir(out) == []
  finally:
    for p in (tmp_path / "ro",):
      if p.exists():
        p.chmod(0o755)

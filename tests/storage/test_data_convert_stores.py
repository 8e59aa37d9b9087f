"""`samjax data convert` / `inspect` with inputs and output on a bucket: a real
fake-gcs-server and a real moto S3 server (``tests/storage_servers.py``).

Every conversion on a bucket is compared with the same conversion on local
disk: the shards and indices byte for byte, the JSON files after the input
paths are mapped (they name the inputs), with the digests of those paths
apart: ``done.json``'s ``plan_sha256`` and, for COCO, each plan.json item's
digest (it covers the image folder's path). ``inspect`` prints the same
report.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time

import pytest

from data_pipelines import atomic_io, dataset_layout, sa1b, sa1b_to_tfrecord, storage
from tests.data_pipelines import conftest as data_fixtures
from tests.data_pipelines import test_coco_convert
from tests.data_pipelines.test_convert_faults import (
  _RUNNER,
  REPO,
  _cli,
  _one_line_error,
  kill_and_check_workers,
)

QUIET = {"progress": False, "log": lambda *_: None}

# The data tests' sample (10 small images) and its local conversion: the
# reference every bucket conversion is compared with.
sample_dir = data_fixtures.sample_dir
converted_dir = data_fixtures.converted_dir
coco_set = test_coco_convert.coco_set


@pytest.fixture(params=["gs", "s3"])
def bucket(request):
  return request.getfixturevalue(f"{request.param}_bucket")


def upload(local_dir: str, remote_dir: str) -> None:
  for rel in storage.walk_files(local_dir):
    atomic_io.copy_file(os.path.join(local_dir, rel), storage.join(remote_dir, rel))


def files(d: str) -> dict[str, bytes]:
  return {rel: storage.read_bytes(storage.join(d, rel)) for rel in storage.walk_files(d)}


def same_conversion(got_dir: str, want_dir: str, got_src: str, want_src: str) -> None:
  """``got_dir`` holds exactly ``want_dir``'s files: shards and indices byte
  for byte; JSONs equal once ``got_src`` (the input paths) reads
  ``want_src``, except the digests of those paths (module docstring)."""
  got, want = files(got_dir), files(want_dir)
  assert sorted(got) == sorted(want)
  for name, data in want.items():
    if not name.endswith(".json"):
      assert got[name] == data, name
      continue
    mine = json.loads(got[name].decode().replace(got_src, want_src))
    ref = json.loads(data)
    if name.endswith(".done.json"):
      assert len(mine.pop("plan_sha256")) == len(ref.pop("plan_sha256")) == 64
    if name == dataset_layout.PLAN:  # COCO items: [json, image id, digest]
      for doc in (mine, ref):
        doc["shards"] = [[r[:2] for r in shard] for shard in doc["shards"]]
    assert mine == ref, name


def inspect_output(capsys, path: str) -> str:
  assert _cli("inspect", path) == 0
  return capsys.readouterr().out.replace(path, "<DIR>")


def test_convert_and_inspect_on_a_bucket_equal_local(bucket, sample_dir, converted_dir,
                                                     capsys):
  src, out = f"{bucket}/sa1b", f"{bucket}/tfr"
  upload(sample_dir, src)
  assert _cli("convert", "--src", src, "--out", out, "--shards", "3", "--workers", "1",
              "--no-progress") == 0
  assert "done in" in capsys.readouterr().out
  same_conversion(out, converted_dir, src, sample_dir)
  assert inspect_output(capsys, out) == inspect_output(capsys, converted_dir)
  # A rerun finds every shard finished (done.json sizes and sha256s checked
  # through the store) and writes nothing but the same manifest again.
  logged = []
  assert sa1b_to_tfrecord.convert([src], out, 3, progress=False, log=logged.append)
  assert "3 already finished, 0 to write" in logged[0]
  same_conversion(out, converted_dir, src, sample_dir)


def test_convert_local_inputs_to_a_bucket_and_back(gs_bucket, sample_dir, converted_dir,
                                                   tmp_path):
  out = f"{gs_bucket}/tfr"
  assert sa1b_to_tfrecord.convert([sample_dir], out, 3, **QUIET)
  same_conversion(out, converted_dir, sample_dir, sample_dir)
  src = f"{gs_bucket}/sa1b"
  upload(sample_dir, src)
  assert sa1b_to_tfrecord.convert([src], str(tmp_path / "tfr"), 3, **QUIET)
  same_conversion(str(tmp_path / "tfr"), converted_dir, src, sample_dir)


def test_damaged_shard_on_a_bucket_is_rewritten(gs_bucket, sample_dir, converted_dir):
  """Resume through the store: a bit-flipped shard object (same size) fails
  its sha256 and is rewritten; the intact ones are kept."""
  out = f"{gs_bucket}/tfr"
  upload(converted_dir, out)
  shard = storage.join(out, dataset_layout.shard_name(1, 3))
  data = bytearray(storage.read_bytes(shard))
  data[len(data) // 2] ^= 0x01
  atomic_io.write_bytes(shard, bytes(data))
  logged = []
  assert sa1b_to_tfrecord.convert([sample_dir], out, 3, progress=False, log=logged.append)
  assert "2 already finished, 1 to write" in logged[0]
  assert files(out) == files(converted_dir)


def test_coco_on_a_bucket_equals_local(gs_bucket, coco_set, tmp_path):
  args = ["--shards", "2", "--no-progress", "--train-size", "64", "--train-gt-size", "32"]
  local_out = str(tmp_path / "coco_tfr")
  with contextlib.redirect_stdout(io.StringIO()):
    assert _cli("convert", "--coco", coco_set["json"], "--images", coco_set["images"],
                "--out", local_out, *args) == 0
  src = f"{gs_bucket}/coco"
  upload(str(coco_set["dir"]), src)
  out = f"{gs_bucket}/coco_tfr"
  with contextlib.redirect_stdout(io.StringIO()):
    assert _cli("convert", "--coco", f"{src}/instances.json", "--images", f"{src}/images",
                "--out", out, *args) == 0
  same_conversion(out, local_out, src, str(coco_set["dir"]))
  # the bucket's skips (a missing, a truncated image...) are the local ones
  assert dataset_layout.load_manifest(out)["skipped_counts"]["missing_image"] == 1


def test_a_failing_store_stops_the_conversion_instead_of_skipping(gs_bucket, sample_dir,
                                                                  monkeypatch, capsys):
  """A tar that vanishes after the scan: the conversion stops in one line
  naming it (exit 1, no manifest) instead of listing its images as skipped."""
  src, out = f"{gs_bucket}/sa1b", f"{gs_bucket}/tfr"
  upload(sample_dir, src)
  gone = storage.join(src, "sa_000001.tar")
  real_scan = sa1b.scan

  def scan_then_lose_a_tar(paths):
    found = real_scan(paths)
    storage.remove(gone)
    return found

  monkeypatch.setattr(sa1b, "scan", scan_then_lose_a_tar)
  assert _cli("convert", "--src", src, "--out", out, "--shards", "3", "--workers", "1",
              "--no-progress") == 1
  _one_line_error(capsys, "samjax data convert: error:", f"{gone}: the object is gone")
  assert not storage.exists(storage.join(out, dataset_layout.MANIFEST))
  assert dataset_layout.shard_name(0, 3) in storage.listdir(out)  # shard 0 stays finished


def test_killed_conversion_on_a_bucket_resumes_exactly(gs_bucket, sample_dir, converted_dir,
                                                       tmp_path):
  """kill -9 of `data convert` gs:// -> gs:// with 2 workers mid-run: no
  worker outlives it, every object in the bucket is whole, and a rerun
  keeps the finished shards and ends byte-identical to a local conversion."""
  src, out = f"{gs_bucket}/sa1b", f"{gs_bucket}/tfr"
  upload(sample_dir, src)
  # The killed workers' local upload spools (atomic_io) stay behind: keep
  # them in this test's folder rather than the machine's /tmp.
  (tmp_path / "spool").mkdir()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]), TMPDIR=str(tmp_path / "spool"),
             **{sa1b_to_tfrecord.FAULT_RECORD_DELAY: "0.25"})
  with open(tmp_path / "log.txt", "wb") as log:
    parent = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, "data", "convert", "--src", src, "--out", out,
         "--shards", "3", "--workers", "2", "--no-progress"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      # Kill once the first shard is finished: the other worker is mid-shard.
      deadline = time.monotonic() + 90
      while not (storage.exists(out)
                 and any(n.endswith(".done.json") for n in storage.listdir(out))):
        assert parent.poll() is None, (tmp_path / "log.txt").read_text()
        assert time.monotonic() < deadline, "the conversion never finished a shard"
        time.sleep(0.05)
      kill_and_check_workers(parent)
    finally:
      if parent.poll() is None:
        parent.kill()
        parent.wait()
  assert not storage.exists(storage.join(out, dataset_layout.MANIFEST))  # cut short
  ref = files(converted_dir)
  left_behind = files(out)
  for name, data in left_behind.items():  # whole objects only, never a part of one
    assert dataset_layout.is_output_file(name), name
    if not name.endswith(".json"):
      assert data == ref[name], name
  logged = []
  assert sa1b_to_tfrecord.convert([src], out, 3, progress=False, log=logged.append)
  finished = sum(n.endswith(".done.json") for n in left_behind)
  assert 1 <= finished < 3  # killed mid-run, after a shard was finished
  assert f"{finished} already finished, {3 - finished} to write" in logged[0]
  same_conversion(out, converted_dir, src, sample_dir)

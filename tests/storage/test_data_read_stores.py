"""The training input pipeline reading converted shards from a bucket (a real
fake-gcs-server / moto S3 server): the same records and batches as from
local disk, many byte-range requests in flight, and a shard that cannot be
read stops the run in one line while corrupt records are still skipped."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from data_pipelines import dataset_layout, grain_source, pipeline, storage, tfrecord
from data_pipelines.grain_source import TFRecordSource
from tests.data_pipelines import conftest as data_fixtures
from tests.data_pipelines.test_data_pipeline import _cfg, _damaged_copy
from tests.storage.test_data_convert_stores import upload

# The data tests' small converted sample (10 records, 3 shards).
sample_dir = data_fixtures.sample_dir
converted_dir = data_fixtures.converted_dir


@pytest.fixture(params=["gs", "s3"])
def bucket(request):
  return request.getfixturevalue(f"{request.param}_bucket")


@pytest.fixture
def remote_dir(gs_bucket, converted_dir):
  """converted_dir copied to a fresh gs:// bucket."""
  out = f"{gs_bucket}/tfr"
  upload(converted_dir, out)
  return out


def _same_batches(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_bucket_source_gives_the_local_records_and_batches(bucket, converted_dir):
  remote = f"{bucket}/tfr"
  upload(converted_dir, remote)
  local, ours = TFRecordSource(converted_dir), TFRecordSource(remote)
  assert len(ours) == len(local) == 10
  assert [ours[i] for i in range(len(ours))] == [local[i] for i in range(len(local))]
  # Whole pipeline, each with its default read_threads (16 remote, 2 local).
  cfg = _cfg(remote, read_threads=None, num_epochs=1)
  assert cfg.num_read_threads() == pipeline.REMOTE_READ_THREADS
  ref = dataclasses.replace(cfg, data_dir=converted_dir)
  assert ref.num_read_threads() == pipeline.LOCAL_READ_THREADS
  _same_batches(list(pipeline.make_iterator(cfg)), list(pipeline.make_iterator(ref)))


def test_index_files_are_read_concurrently(remote_dir, monkeypatch):
  """Opening a source reads every shard's .idx at once: each read waits
  until all three are in flight (sequential reads would break the barrier)."""
  barrier = threading.Barrier(3, timeout=20)
  real = tfrecord.read_index

  def read_index_together(path):
    barrier.wait()
    return real(path)

  monkeypatch.setattr(grain_source.tfrecord, "read_index", read_index_together)
  assert len(TFRecordSource(remote_dir)) == 10


def _max_reads_in_flight(cfg, monkeypatch, batches: int) -> int:
  """Most ``storage.read_range`` calls running at once while ``batches``
  batches are taken (each call held 50 ms, like a bucket's answer)."""
  real = storage.read_range
  lock, now, most = threading.Lock(), [0], [0]

  def slow_read(path, offset, size):
    with lock:
      now[0] += 1
      most[0] = max(most[0], now[0])
    try:
      time.sleep(0.05)
      return real(path, offset, size)
    finally:
      with lock:
        now[0] -= 1

  monkeypatch.setattr(storage, "read_range", slow_read)
  it = pipeline.make_iterator(cfg)
  for _ in range(batches):
    next(it)
  it.close()
  # Reads grain had already queued still run after close(): let them drain
  # here, so that none of them counts for the next call.
  deadline, quiet = time.monotonic() + 10, 0
  while quiet < 3 and time.monotonic() < deadline:
    quiet = quiet + 1 if now[0] == 0 else 0
    time.sleep(0.1)
  monkeypatch.setattr(storage, "read_range", real)
  return most[0]


def test_bucket_reads_keep_many_requests_in_flight(remote_dir, monkeypatch):
  """read_threads governs the requests in flight: the bucket default keeps
  at least 8 going (grain's prefetch buffer must not cap it), 1 keeps 1."""
  cfg = _cfg(remote_dir, read_threads=None, batch_size=2)
  assert _max_reads_in_flight(cfg, monkeypatch, 4) >= 8
  assert _max_reads_in_flight(dataclasses.replace(cfg, read_threads=1), monkeypatch, 2) == 1


@pytest.mark.parametrize("where, workers", [("gs", 0), ("gs", 1), ("local", 0)])
def test_a_shard_gone_mid_run_stops_it_in_one_line(where, workers, converted_dir, tmp_path,
                                                   request):
  """A shard deleted after the source opened: not skipped records but one
  StorageError naming it (in-process and from a grain worker; on a bucket
  and on local disk alike)."""
  if where == "local":
    data_dir = str(tmp_path / "tfr")
    storage.copy_tree(converted_dir, data_dir)
  else:
    data_dir = request.getfixturevalue("remote_dir")
  cfg = _cfg(data_dir, batch_size=1, num_epochs=1, shuffle=False, read_threads=1,
             worker_count=workers, worker_buffer_size=1)
  it = pipeline.make_iterator(cfg)
  next(it)
  gone = storage.join(data_dir, dataset_layout.shard_name(2, 3))
  storage.remove(gone, missing_ok=False)
  with pytest.raises(Exception) as info:
    for _ in range(20):
      next(it)
  err = info.value
  # grain's worker processes hand the error back wrapped; its cause chain
  # holds ours.
  while not isinstance(err, storage.StorageError) and err.__cause__ is not None:
    err = err.__cause__
  assert isinstance(err, storage.StorageError), repr(info.value)
  assert str(err).startswith(f"record {gone}#") and "\n" not in str(err), str(err)
  assert str(err).endswith(f"{gone} does not exist (any more)"), str(err)


def test_corrupt_records_on_a_bucket_are_skipped_and_counted(gs_bucket, converted_dir,
                                                             tmp_path):
  damaged = str(tmp_path / "damaged")
  _damaged_copy(converted_dir, damaged)
  remote = f"{gs_bucket}/damaged"
  upload(damaged, remote)
  batches = list(pipeline.make_iterator(_cfg(remote, batch_size=1, num_epochs=1,
                                             shuffle=False, read_threads=None)))
  assert len(batches) == 3
  assert sum(int(b["num_skipped"].sum()) for b in batches) == 3

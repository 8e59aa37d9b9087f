"""The path layer (``data_pipelines.storage`` + ``atomic_io``) on a real
fake-gcs-server and a real moto S3 server, and on local disk."""

import pytest

from data_pipelines import atomic_io, storage


@pytest.fixture(params=["local", "gs", "s3"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  return request.getfixturevalue(f"{request.param}_bucket") + "/run"


def test_write_read_list_move_delete(root):
  assert not storage.exists(storage.join(root, "a.json"))
  atomic_io.ensure_dir(root)
  atomic_io.write_json(storage.join(root, "a.json"), {"x": 1})
  storage.makedirs(storage.join(root, "sub"))  # a no-op on a bucket
  atomic_io.write_bytes(storage.join(root, "sub", "b.bin"), bytes(range(256)) * 10)
  assert storage.read_text(storage.join(root, "a.json")) == '{"x": 1}'
  assert storage.isfile(storage.join(root, "a.json"))
  assert storage.isdir(storage.join(root, "sub"))
  assert storage.listdir(root) == ["a.json", "sub"]
  assert storage.getsize(storage.join(root, "sub", "b.bin")) == 2560
  assert storage.read_range(storage.join(root, "sub", "b.bin"), 300, 5) == bytes(range(44, 49))
  assert storage.walk_files(root) == ["a.json", "sub/b.bin"]
  storage.move_tree(storage.join(root, "sub"), storage.join(root, "aside", "sub"))
  assert storage.walk_files(root) == ["a.json", "aside/sub/b.bin"]
  with (storage.local_copy(storage.join(root, "aside", "sub", "b.bin")) as local,
        open(local, "rb") as f):
    assert f.read(3) == bytes([0, 1, 2])
  storage.remove(storage.join(root, "a.json"))
  storage.rmtree(storage.join(root, "aside"))
  assert storage.walk_files(root) == []


def test_failed_atomic_write_leaves_the_old_object(root):
  path = storage.join(root, "keep.txt")
  atomic_io.write_text(path, "old")
  with pytest.raises(RuntimeError), atomic_io.atomic_writer(path, "w") as f:
    f.write("half of the new")
    raise RuntimeError("killed mid-write")
  assert storage.read_text(path) == "old"


def test_missing_bucket_is_one_clear_error(gcs_server):
  with pytest.raises(FileNotFoundError, match="no such bucket"):
    atomic_io.ensure_dir("gs://no-such-bucket-here/run")


def test_unknown_scheme_is_refused():
  with pytest.raises(storage.UnsupportedStoreError, match="unknown storage scheme"):
    storage.exists("hdfs://x/y")


def test_transient_errors_are_retried_then_named(monkeypatch):
  monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
  calls = []

  def flaky():
    calls.append(1)
    if len(calls) < 3:
      raise ConnectionError("reset by peer")
    return "ok"

  assert storage.retrying(flaky, "read gs://b/x") == "ok"
  assert len(calls) == 3

  def down():
    raise TimeoutError("timed out")

  with pytest.raises(storage.StorageError, match=r"read gs://b/y: still failing after 6"):
    storage.retrying(down, "read gs://b/y")

  def missing():
    calls.append(1)
    raise FileNotFoundError("gone")

  n = len(calls)
  with pytest.raises(FileNotFoundError):
    storage.retrying(missing, "x")
  assert len(calls) == n + 1  # not retried


def test_a_killed_uploads_spool_is_removed_by_the_next_writer(gs_bucket, tmp_path,
                                                               monkeypatch):
  import subprocess
  import sys
  import tempfile
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  monkeypatch.setattr(atomic_io, "_swept_in_pid", None)
  orphan = tmp_path / f"{atomic_io.SPOOL_PREFIX}{dead.pid}-abc"
  live = tmp_path / f"{atomic_io.SPOOL_PREFIX}{1}-abc"  # pid 1 always runs
  orphan.write_bytes(b"x" * 1000)
  live.write_bytes(b"y")
  atomic_io.write_text(f"{gs_bucket}/x.txt", "new")
  assert not orphan.exists() and live.exists()
  assert storage.read_text(f"{gs_bucket}/x.txt") == "new"

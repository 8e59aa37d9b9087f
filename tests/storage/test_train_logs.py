"""A training run's logs and inputs on local disk and on a real fake-gcs-server:
the metrics log (``metrics_store``), TensorBoard event files (``event_log``),
a config file and the compilation cache in a bucket. No training here (the
runs are in ``test_train_gcs.py``): each test takes a second or two."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from data_pipelines import atomic_io, storage
from samjax import formats
from samjax.train import event_log, metrics_store


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "run")
  return request.getfixturevalue("gs_bucket") + "/run"


def _write(workdir: str, steps, split="train") -> None:
  writer = metrics_store.MetricsWriter(workdir)
  for s in steps:
    writer.write({"step": s, "split": split, "loss": float(s)})
  writer.close()


def test_metrics_log_survives_restarts_and_drops_what_a_resume_replays(workdir,
                                                                        monkeypatch):
  monkeypatch.setattr(metrics_store, "SEGMENT_LINES", 2)
  _write(workdir, [1, 2, 3])       # first process: steps 1..3
  _write(workdir, [4, 5])          # a restart, killed after step 5
  assert [r["step"] for r in metrics_store.read_metrics(workdir)] == [1, 2, 3, 4, 5]
  if storage.is_remote(workdir):
    # Two segments for the first process (2 lines each at most), one per restart.
    names = storage.listdir(storage.join(workdir, formats.METRICS_SEGMENTS))
    assert [n.split("-")[0] for n in names] == ["000000000001", "000000000003",
                                                 "000000000004"]
    assert not storage.exists(storage.join(workdir, formats.METRICS))
  # The resume restored step 2: steps 3..5 are logged again, so they go.
  assert metrics_store.remove_records(workdir, lambda r: r["step"] > 2) == 3
  _write(workdir, [3, 4])
  got = metrics_store.read_metrics(workdir)
  assert [r["step"] for r in got] == [1, 2, 3, 4]
  assert metrics_store.remove_records(workdir, lambda r: r["step"] > 4) == 0


def test_torn_last_line_is_dropped_and_never_glued_to_the_next(tmp_path):
  workdir = str(tmp_path)
  path = storage.join(workdir, formats.METRICS)
  atomic_io.write_text(path, '{"step": 1, "split": "train"}\n{"step": 2, "spl')
  assert [r["step"] for r in metrics_store.read_metrics(workdir)] == [1]
  assert metrics_store.remove_records(workdir, lambda r: False) == 0
  assert storage.read_text(path) == '{"step": 1, "split": "train"}\n'  # rewritten whole
  _write(workdir, [2])
  assert [r["step"] for r in metrics_store.read_metrics(workdir)] == [1, 2]
  # Damage before the last line is an error naming the file, not a silent skip.
  atomic_io.write_text(path, '{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a JSON record"):
    metrics_store.read_metrics(workdir)


def _events(data: bytes) -> list:
  """The Event protos of a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto.event_pb2 import Event
  out, pos = [], 0
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos:pos + 8])
    out.append(Event.FromString(data[pos + 12:pos + 12 + n]))
    pos += 12 + n + 4
  return out


def test_event_files_roll_and_every_flush_is_whole(workdir, monkeypatch):
  monkeypatch.setattr(event_log, "ROLL_FLUSHES", 2)
  logdir = storage.join(workdir, formats.TENSORBOARD)
  log = event_log.EventLog(logdir, restart_step=2)
  for step in (3, 4, 5):
    log.scalar("train/loss", step / 10, step)
    log.flush()
    # After every flush the bucket (or disk) holds every event so far.
    names = storage.listdir(logdir)
    seen = [e.step for n in names for e in _events(storage.read_bytes(storage.join(logdir, n)))
            if e.HasField("summary")]
    assert seen == list(range(3, step + 1))
  log.close()
  names = storage.listdir(logdir)
  # Local disk: one file, appended. Bucket: a new object after 2 flushes.
  assert len(names) == (2 if storage.is_remote(workdir) else 1)
  assert names == sorted(names)
  first = _events(storage.read_bytes(storage.join(logdir, names[0])))
  assert first[0].file_version == "brain.Event:2"
  # A resumed run's first event tells TensorBoard to drop the killed run's later points.
  from tensorboardX.proto.event_pb2 import SessionLog
  assert first[1].session_log.status == SessionLog.START and first[1].step == 3
  assert first[2].summary.value[0].tag == "train/loss"


def test_config_file_in_a_bucket(gs_bucket):
  from samjax.configs import load_config
  local = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs",
                       "tiny_demo.py")
  remote = f"{gs_bucket}/configs/tiny_demo.py"
  atomic_io.copy_file(local, remote)
  overrides = ["--config.total_steps=7"]
  assert load_config(remote, overrides).to_dict() == load_config(local, overrides).to_dict()
  with pytest.raises(FileNotFoundError, match="no such config file"):
    load_config(f"{gs_bucket}/configs/missing.py")


def test_compile_cache_in_a_bucket(gs_bucket):
  """A fresh process compiles into gs://.../xla (jax writes through etils.epath)."""
  cache = f"{gs_bucket}/xla"
  code = ("import jax, jax.numpy as jnp\n"
          "from samjax.compile_cache import enable_compile_cache\n"
          f"assert enable_compile_cache({cache!r}, min_compile_seconds=0) == {cache!r}\n"
          "print(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).sum())\n")
  env = {k: v for k, v in os.environ.items() if k != "SAMJAX_COMPILATION_CACHE"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert any(n.startswith("jit_") for n in storage.listdir(cache)), storage.listdir(cache)

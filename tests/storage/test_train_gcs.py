"""``samjax train`` with its workdir and its data on a real fake-gcs-server,
compared with the uninterrupted local reference run (``reference_run``).

One scenario, shared by the tests below (each CLI run is ~20 s of a 2-core
CI host, so none is repeated): a run on the bucket is killed with SIGKILL
after step 5 (checkpoints at steps 2 and 4), one array object of its newest
checkpoint is then truncated on the bucket, and the same command resumes.
The resumed run must report step 4 in one line, set it aside, resume from
step 2 and replay steps 3..6 exactly as the local uninterrupted run did.

The two-process preemption test runs on the bucket too
(``tests/train/test_train_loop.py::two_process_run``).
"""

from __future__ import annotations

import os
import re
import subprocess

import jax
import numpy as np
import pytest

from data_pipelines import atomic_io, storage
from samjax import formats
from samjax.train.metrics_store import read_metrics
from tests.train import conftest as train_fixtures
from tests.train.conftest import train_losses, upload_train_data
from tests.train.test_train_loop import REPO, _cli_args

# The training tests' session fixtures (built once per session: build_once).
train_data = train_fixtures.train_data
reference_run = train_fixtures.reference_run

# One worker runs this module (make test: --dist loadgroup), and its two CLI
# training runs are a session fixture of that worker: a module fixture would
# be rebuilt whenever the worker ran another module's test in between.
pytestmark = pytest.mark.xdist_group("train_gcs")

NOISE = ("exception was never retrieved", "Exception ignored in", "Traceback")


@pytest.fixture(scope="session")
def gcs_train_data(gcs_server, train_data):
  """The session's converted sample data in a new bucket: ({"train", "eval"}, bucket)."""
  data = upload_train_data(gcs_server, train_data)
  return data, data["train"].split("/data/")[0]


def _train(data, workdir, **env) -> subprocess.CompletedProcess:
  return subprocess.run(_cli_args(data, workdir, checkpoint_every=2),
                        env=dict(os.environ, PYTHONPATH=REPO, **env),
                        capture_output=True, text=True, timeout=600)


def truncate_largest_object(step_dir: str) -> str:
  """Halves the largest object of a checkpoint step's ``state`` (one whole
  object write: what a bucket holds after a botched copy)."""
  state = storage.join(step_dir, "state")
  victim = storage.join(state, max(storage.walk_files(state),
                                   key=lambda rel: storage.getsize(storage.join(state, rel))))
  data = storage.read_bytes(victim)
  atomic_io.write_bytes(victim, data[:len(data) // 2])
  return victim


def checkpoint_steps(workdir: str) -> list[int]:
  folder = formats.checkpoints_dir(workdir)
  return sorted(int(n) for n in storage.listdir(folder) if n.isdigit())


@pytest.fixture(scope="session")
def killed_then_resumed(gcs_train_data):
  """{"workdir", "killed", "resumed" (CompletedProcess), "metrics_after_kill",
  "events_after_kill", "steps_after_kill"}."""
  data, bucket = gcs_train_data
  workdir = f"{bucket}/run"
  out = {"workdir": workdir}
  out["killed"] = _train(data, workdir, SAMJAX_FAULT_KILL_AT_STEP="5")
  out["metrics_after_kill"] = read_metrics(workdir)
  out["events_after_kill"] = storage.listdir(storage.join(workdir, formats.TENSORBOARD))
  out["steps_after_kill"] = checkpoint_steps(workdir)
  truncate_largest_object(storage.join(formats.checkpoints_dir(workdir), "4"))
  out["resumed"] = _train(data, workdir)
  return out


def test_killed_run_on_gcs_resumes_past_a_corrupt_step_like_an_uninterrupted_run(
    killed_then_resumed, reference_run):
  run = killed_then_resumed
  assert run["killed"].returncode == -9, run["killed"].stderr[-2000:]  # SIGKILL, no cleanup
  assert run["steps_after_kill"] == [2, 4]
  resumed = run["resumed"]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 2 in gs://" in resumed.stdout
  # The corrupt step: set aside on the bucket (never deleted), saved again.
  aside = storage.listdir(storage.join(run["workdir"], formats.UNRESTORABLE_CHECKPOINTS))
  assert len(aside) == 1 and aside[0].startswith("4-"), aside
  assert checkpoint_steps(run["workdir"]) == [4, 6]  # saved again; tiny_demo keeps 2
  ref, got = train_losses(reference_run[0]), train_losses(run["workdir"])
  assert sorted(got) == list(range(1, 7))
  for step in range(1, 7):  # 3..6 replayed after the resume
    np.testing.assert_allclose(got[step], ref[step], rtol=1e-6)
  final = storage.read_text(storage.join(run["workdir"], formats.FINAL_METRICS))
  assert '"iou_first"' in final


def test_corrupt_step_is_one_line_without_orbax_noise(killed_then_resumed):
  """One report line for the corrupt step, and none of the thousands of lines
  of orphaned orbax reads (``samjax.checkpoints.orbax_orphans``) on stderr."""
  resumed = killed_then_resumed["resumed"]
  reports = [x for x in resumed.stdout.splitlines() if x.startswith("[checkpoint] step 4:")]
  assert len(reports) == 1 and "OUT_OF_RANGE" in reports[0] and len(reports[0]) < 500
  assert re.search(r"moved unrestorable step 4 to gs://\S+/checkpoints_unrestorable/4-",
                   resumed.stdout)
  for word in NOISE:
    assert word not in resumed.stderr, resumed.stderr[-3000:]


def test_metrics_on_gcs_hold_every_logged_step_once(killed_then_resumed):
  run = killed_then_resumed
  # Flushed at every log: the killed run's records and events are on the bucket.
  assert [(r["step"], r["split"]) for r in run["metrics_after_kill"]] == [
      (s, "train") for s in range(1, 5)]
  assert any(n.startswith("events.out.tfevents") for n in run["events_after_kill"])
  # Segment objects, no metrics.jsonl (a bucket cannot append): one per process start.
  segments = storage.listdir(storage.join(run["workdir"], formats.METRICS_SEGMENTS))
  assert not storage.exists(storage.join(run["workdir"], formats.METRICS))
  assert [s.split("-")[0] for s in segments] == ["000000000001", "000000000003"]
  # Steps 3 and 4 were logged by both runs; the resume removed the killed run's.
  got = [(r["step"], r["split"]) for r in read_metrics(run["workdir"])]
  assert got == [(s, "train") for s in range(1, 7)] + [(6, "eval")]
  assert "removed 2 metrics records logged after step 2" in run["resumed"].stdout
  events = storage.listdir(storage.join(run["workdir"], formats.TENSORBOARD))
  assert len([n for n in events if n.startswith("events.out.tfevents")]) == 2


def test_load_sam_and_export_of_a_gcs_workdir_equal_its_local_copy(killed_then_resumed):
  """``load_sam("gs://.../run")`` and ``samjax convert --to-torch gs://.../run
  --out gs://.../model.pth`` give what the same calls give on a local copy."""
  from samjax import load_sam
  from samjax.cli import main
  from tests.storage.test_models_stores import assert_same_tensors, torch_tensors
  workdir = killed_then_resumed["workdir"]
  remote = load_sam(workdir)
  bucket_pth = storage.join(storage.dirname(workdir), "export", "model.pth")
  assert main(["convert", "--to-torch", workdir, "--out", bucket_pth]) == 0
  with storage.local_folder_copy(workdir) as local:
    here = load_sam(local)
    local_pth = os.path.join(local, "model.pth")
    assert main(["convert", "--to-torch", local, "--out", local_pth]) == 0
    assert_same_tensors(torch_tensors(bucket_pth), torch_tensors(local_pth))
    assert (storage.read_text(bucket_pth + ".json").replace(workdir, "W")
            == storage.read_text(local_pth + ".json").replace(local, "W"))
  assert remote.config == here.config
  a, b = jax.tree_util.tree_leaves(remote.params), jax.tree_util.tree_leaves(here.params)
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_s3_workdir_is_refused_in_one_line_before_writing(s3_bucket, train_data):
  workdir = f"{s3_bucket}/run"
  result = subprocess.run(_cli_args(train_data, workdir), env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("samjax train: error: s3://")
  assert "github.com/google/orbax/issues/359" in lines[0]
  assert storage.walk_files(s3_bucket) == []
  assert not os.path.exists("s3:")  # nothing landed in a local folder named after the scheme

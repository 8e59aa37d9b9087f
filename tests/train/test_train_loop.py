"""The training loop end to end: determinism, exact resume after a hard kill,
two-process jax.distributed training, loading a workdir for inference."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import storage
from tests.multiprocess import process_env
from tests.shared_fixtures import build_once
from tests.storage_servers import free_port
from tests.train.conftest import TEST_MODEL, small_config, train_losses, upload_train_data

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(REPO, "experiments", "configs", "tiny_demo.py")


def _cli_args(train_data, workdir, **overrides):
  args = [sys.executable, "-m", "samjax.cli", "train", "--config", CONFIG,
          "--workdir", workdir]
  base = {"model.overrides": TEST_MODEL, "data.train_dir": train_data["train"],
          "data.eval_dir": train_data["eval"], "data.batch_size": 8,
          "data.eval_batch_size": 8, "data.max_masks": 4, "sim.num_point_iters": 1,
          "sim.num_mask_only_iters": 1, "total_steps": 6, "log_every": 1,
          "checkpoint_every": 3, "optim.warmup_steps": 2, "optim.decay_steps": [4],
          "eval_at_start": False, "async_checkpoints": False}
  base.update(overrides)
  args += [f"--config.{k}={v!r}" if not isinstance(v, str) else f"--config.{k}={v}"
           for k, v in base.items()]
  return args


def test_same_seed_same_losses(reference_run, train_data, tmp_path):
  from samjax.train.loop import train_and_evaluate
  ref_dir, results = reference_run
  workdir = str(tmp_path / "again")
  train_and_evaluate(small_config(train_data, total_steps=3), workdir)
  ref, again = train_losses(ref_dir), train_losses(workdir)
  assert sorted(ref) == list(range(1, 7))
  for step in (1, 2, 3):
    assert again[step] == ref[step]          # bit-identical on CPU
  assert "iou_first" in results and 0.0 <= results["iou_first"] <= 1.0
  with open(os.path.join(ref_dir, "config.json")) as f:
    saved = json.load(f)
  assert saved["seed"] == 0 and "samjax" in saved["code_version"]
  events = os.listdir(os.path.join(ref_dir, "tensorboard"))
  assert any(e.startswith("events.out.tfevents") for e in events)


def test_hard_kill_then_resume_matches_uninterrupted(reference_run, train_data, tmp_path):
  ref_dir, _ = reference_run
  workdir = str(tmp_path / "killed")
  env = dict(os.environ, PYTHONPATH=REPO)
  first = subprocess.run(_cli_args(train_data, workdir),
                         env=dict(env, SAMJAX_FAULT_KILL_AT_STEP="5"),
                         capture_output=True, text=True, timeout=600)
  assert first.returncode == -9, first.stderr[-2000:]      # SIGKILL, no cleanup
  second = subprocess.run(_cli_args(train_data, workdir), env=env, capture_output=True,
                          text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "resumed from step 3" in second.stdout
  ref, resumed = train_losses(ref_dir), train_losses(workdir)
  for step in (4, 5, 6):                    # replayed after the resume
    np.testing.assert_allclose(resumed[step], ref[step], rtol=1e-6)


def test_resume_onto_a_different_mesh(reference_run, train_data, tmp_path):
  """Checkpoint on an 8-way `data` mesh, resume on 2 x 4 (`data` x `fsdp`): the
  parameters are re-sharded on restore and the run continues as before."""
  from samjax.train.loop import train_and_evaluate
  ref_dir, _ = reference_run
  workdir = str(tmp_path / "remesh")
  train_and_evaluate(small_config(train_data, total_steps=3, **{"mesh.shape": (8, 1, 1)}),
                     workdir)
  # No held-out evaluation on the new mesh: the losses are what is compared,
  # and its evaluation program would be one more cold compile.
  train_and_evaluate(small_config(train_data, **{"mesh.shape": (2, 4, 1),
                                                 "data.eval_dir": ""}), workdir)
  ref, resumed = train_losses(ref_dir), train_losses(workdir)
  assert sorted(resumed) == list(range(1, 7))
  for step in (4, 5, 6):  # different reduction order across shards: float tolerance
    np.testing.assert_allclose(resumed[step], ref[step], rtol=1e-4)


def test_load_sam_from_training_workdir(reference_run, tmp_path):
  from samjax import SamPredictor, load_sam
  from samjax.cli import main
  ref_dir, _ = reference_run
  sam = load_sam(ref_dir)
  assert sam.config.image_size == 128
  predictor = SamPredictor(sam)
  predictor.set_image(np.zeros((50, 80, 3), np.uint8))
  masks, _, _ = predictor.predict(np.array([[10.0, 10.0]]), np.array([1]))
  assert masks.shape == (3, 50, 80)
  out = str(tmp_path / "trained.pth")
  assert main(["convert", "--to-torch", ref_dir, "--out", out]) == 0
  import torch

  from samjax.interop import build_official_sam
  official = build_official_sam(sam.config)
  official.load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_eval_points_directly_from_a_training_workdir(reference_run, tmp_path, capsys):
  """`samjax eval` takes a `samjax train` workdir as its checkpoint (newest step)."""
  from samjax.cli import main
  from samjax.evaluation.sample_sets import make_eval_set
  ref_dir, _ = reference_run
  data = make_eval_set(str(tmp_path / "eval_set"))
  out = tmp_path / "r.json"
  rc = main(["eval", "points", "--checkpoint", ref_dir, "--annotations", data["annotations"],
             "--images", data["images"], "--out", str(out), "--max-points", "2",
             "--limit", "1", "--no-progress"])
  assert rc == 0, capsys.readouterr().err
  doc = json.loads(out.read_text())
  assert doc["model"]["config"]["image_size"] == 128  # the workdir's model
  assert doc["num_masks"] > 0 and 0.0 <= doc["miou_1pt"] <= doc["miou_1pt_oracle"] <= 1.0
  assert len(doc["miou_curve"]) == 2


def _launch_two_processes(train_data, workdir, total_steps, fault_env=None, evaluate=False):
  """2 local processes (1 CPU device each) via jax.distributed; ``fault_env``
  is added to process 1's environment only; ``evaluate`` keeps the held-out
  evaluation after training (off: one program less to compile, and process 1
  compiles every program itself: jax keys a CPU program by the process's own
  topology, and only process 0 writes the compilation cache).
  Returns [(rc, stdout, stderr)]."""
  port = free_port()
  procs = []
  for pid in range(2):
    env = process_env(port, 2, pid)
    if pid == 1 and fault_env:
      env.update(fault_env)
    procs.append(subprocess.Popen(
        _cli_args(train_data, workdir, total_steps=total_steps, checkpoint_every=2,
                  **{"mesh.shape": (2, 1, 1)},
                  **({} if evaluate else {"data.eval_dir": ""})),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=600) for p in procs]
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.fixture(scope="session")
def two_process_run(train_data, gcs_server, tmp_path_factory):
  """Three 2-process launches, shared by the two tests below (each launch
  costs two cold compiles, so none is repeated):

    uninterrupted  4 steps in one launch on local disk, checkpoints at 2 and
                   4, then the held-out evaluation: the reference the others
                   replay;
    preempted      4 steps with the workdir and the data on a real GCS server
                   (fake-gcs-server), only process 1 gets SIGTERM after step 1;
    resumed        the preempted bucket workdir restarted, to step 4.

  Returns {name: [workdir, [(rc, stdout, stderr) per process], the
  checkpoint steps after the launch, {step: training loss} as [[step, loss]]]}.
  Everything is read while the fixture is built: an xdist worker that reads
  the shared result has its own GCS server, without this one's buckets.
  """
  def build(root):
    runs = {}
    gcs_data = upload_train_data(gcs_server, train_data)
    bucket_workdir = gcs_data["train"].split("/data/")[0] + "/preempted"
    for name, data, workdir, kwargs in (
        ("uninterrupted", train_data, os.path.join(root, "uninterrupted"), {"evaluate": True}),
        ("preempted", gcs_data, bucket_workdir,
         {"fault_env": {"SAMJAX_FAULT_SIGTERM_AT_STEP": "1"}}),
        ("resumed", gcs_data, bucket_workdir, {})):
      outs = _launch_two_processes(data, workdir, 4, **kwargs)
      runs[name] = [workdir, outs, _checkpoint_steps(workdir),
                    sorted(train_losses(workdir).items())]
    return runs
  return build_once(tmp_path_factory, "two_process_run", build)


def _checkpoint_steps(workdir) -> list[int]:
  folder = storage.join(workdir, "checkpoints")
  if not storage.isdir(folder):
    return []
  return sorted(int(d) for d in storage.listdir(folder) if d.isdigit())


def _saved_at_preemption(stdout: str) -> int:
  match = re.search(r"preemption notice .*: saved step (\d+)", stdout)
  assert match, stdout[-2000:]
  return int(match.group(1))


def test_two_process_distributed_train_checkpoint_restore(two_process_run):
  """2 local processes (1 CPU device each) via jax.distributed: train,
  checkpoint, evaluate across both hosts; then restart both and resume."""
  _, first, steps, _ = two_process_run["uninterrupted"]
  second = two_process_run["resumed"][1]
  for rc, _, err in first + second:
    assert rc == 0, err[-3000:]
  assert "4 steps done" in first[0][1]
  assert "[eval] step 4 (after training)" in first[0][1]  # held-out eval across 2 hosts
  assert first[1][1].strip() == "" or "step" not in first[1][1]  # only process 0 logs
  assert {2, 4} <= set(steps)
  saved = _saved_at_preemption(two_process_run["preempted"][1][0][1])
  assert f"resumed from step {saved}" in second[0][1]
  losses = dict(two_process_run["uninterrupted"][3])
  assert set(losses) >= {1, 2, 3, 4} and all(np.isfinite(v) for v in losses.values())


def test_sigterm_on_one_process_saves_the_same_step_on_both(two_process_run):
  """Workdir and data on a GCS server; only process 1 gets SIGTERM (after
  step 1): both processes agree on one step, save it together and exit 0;
  the restart resumes from it and replays exactly what the uninterrupted
  local run computed, every step logged once."""
  workdir, outs, steps, _ = two_process_run["preempted"]
  assert workdir.startswith("gs://")
  for rc, _, err in outs:
    assert rc == 0, err[-3000:]
  saved = _saved_at_preemption(outs[0][1])
  assert 2 <= saved <= 4
  assert steps[-1] == saved  # one checkpoint both processes wrote, nothing after it
  resumed = two_process_run["resumed"][1]
  for rc, _, err in resumed:
    assert rc == 0, err[-3000:]
  assert f"resumed from step {saved}" in resumed[0][1]
  ref, got = dict(two_process_run["uninterrupted"][3]), dict(two_process_run["resumed"][3])
  assert sorted(got) == list(range(1, 5))
  for step in range(1, 5):
    np.testing.assert_allclose(got[step], ref[step], rtol=1e-5)


def test_non_finite_training_stops_and_keeps_last_good_checkpoint(train_data, tmp_path,
                                                                  monkeypatch):
  """Parameters poisoned after step 3 (fault injection: the same programs as
  the reference run, so nothing new compiles): the step-3 save is refused
  on the parameters, and with a later save the NaN loss of step 4 stops the
  run first; either way the last good checkpoint (step 2) stays the newest."""
  from samjax.train.checkpointing import Checkpointer
  from samjax.train.faults import NAN_PARAMS_AT_STEP
  from samjax.train.loop import NonFiniteLossError, train_and_evaluate
  monkeypatch.setenv(NAN_PARAMS_AT_STEP, "3")
  for every, caught in ((1, "non-finite parameters after step 3"),
                        (2, "non-finite loss nan at step 4")):
    workdir = str(tmp_path / f"nan_every_{every}")
    with pytest.raises(NonFiniteLossError, match=f"{caught}.*last good checkpoint .step 2."):
      train_and_evaluate(small_config(train_data, checkpoint_every=every), workdir)
    ckpt = Checkpointer(workdir, async_save=False)
    try:
      assert ckpt.all_steps()[-1] == 2
      params = ckpt.restore_params()
    finally:
      ckpt.close()
    import jax
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params))

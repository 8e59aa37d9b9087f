"""Training under faults: corrupt checkpoints, a config that does not fit the
workdir, Ctrl-C. Each test asserts what is on disk afterwards."""

import os
import shutil

import jax
import numpy as np
import pytest

from tests.train.conftest import small_config, train_losses


def _snapshot(root):
  """{relative path: (size, mtime_ns)} of every file under ``root``."""
  out = {}
  for d, _, files in os.walk(root):
    for name in files:
      p = os.path.join(d, name)
      st = os.stat(p)
      out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
  return out


def _truncate_largest_file(step_dir):
  files = [os.path.join(d, n) for d, _, ns in os.walk(os.path.join(step_dir, "state"))
           for n in ns]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  return victim


# An orbax read orphaned by the failed restore, reported at garbage collection,
# fails the test (samjax.checkpoints.orbax_orphans keeps the report to one line).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_newest_checkpoint_is_skipped_not_deleted(reference_run, train_data,
                                                          tmp_path, capsys, caplog):
  from samjax import load_sam
  from samjax.train.checkpointing import Checkpointer
  from samjax.train.loop import train_and_evaluate
  ref_dir, _ = reference_run
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(ref_dir, workdir)
  _truncate_largest_file(os.path.join(workdir, "checkpoints", "6"))

  # Inference falls back to step 3 and moves nothing.
  sam = load_sam(workdir)
  ckpt = Checkpointer(ref_dir, async_save=False)
  try:
    step3 = ckpt.restore_params(3)
  finally:
    ckpt.close()
  for a, b in zip(jax.tree_util.tree_leaves(sam.params), jax.tree_util.tree_leaves(step3)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert "step 6 does not restore" in capsys.readouterr().out
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))

  # Training resumes from step 3, keeps the corrupt step aside, replays 4..6.
  train_and_evaluate(small_config(train_data), workdir)
  out = capsys.readouterr().out
  assert "resumed from step 3" in out
  line = next(x for x in out.splitlines() if "[checkpoint] step 6" in x)
  assert len(line) < 500 and "OUT_OF_RANGE" in line  # one line naming the damage
  assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
  import gc
  gc.collect()  # any orphan left would be reported (and fail the test) now
  aside = os.listdir(os.path.join(workdir, "checkpoints_unrestorable"))
  assert len(aside) == 1 and aside[0].startswith("6-")
  ref, resumed = train_losses(ref_dir), train_losses(workdir)
  for step in (4, 5, 6):
    np.testing.assert_allclose(resumed[step], ref[step], rtol=1e-6)
  assert load_sam(workdir).config.image_size == 128  # newest step restores again


def test_config_that_does_not_fit_is_refused_before_touching_the_workdir(
    reference_run, train_data, tmp_path):
  from samjax.checkpoints.workdir import NoRestorableCheckpointError
  from samjax.train.loop import train_and_evaluate
  ref_dir, _ = reference_run
  workdir = str(tmp_path / "wrong_config")
  shutil.copytree(ref_dir, workdir)
  before = _snapshot(workdir)
  # Another architecture: refused from the workdir's model config alone.
  other = small_config(train_data)
  other.model.overrides = {"image_size": 256}
  with pytest.raises(ValueError, match=r"holds a run of .*use another --workdir"):
    train_and_evaluate(other, workdir)
  assert _snapshot(workdir) == before
  # Same model, another optimizer structure: no checkpoint restores; every
  # step's reason in one message, nothing written or moved.
  clipped = small_config(train_data)
  clipped.optim.grad_clip = 1.0
  with pytest.raises(NoRestorableCheckpointError, match=r"step 6: .*step 3: "):
    train_and_evaluate(clipped, workdir)
  assert _snapshot(workdir) == before


def test_ctrl_c_saves_at_the_step_boundary_and_exits(train_data, tmp_path, monkeypatch):
  from samjax.train.checkpointing import Checkpointer
  from samjax.train.loop import train_and_evaluate
  workdir = str(tmp_path / "ctrl_c")
  monkeypatch.setenv("SAMJAX_FAULT_SIGINT_AT_STEP", "2")
  out = train_and_evaluate(small_config(train_data, checkpoint_every=100), workdir)
  assert out == {"preempted_at": 3}  # the flag is seen at the next step boundary
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    assert ckpt.all_steps() == [3]
    ckpt.restore_params(3)  # complete, restorable
  finally:
    ckpt.close()
  assert sorted(train_losses(workdir)) == [1, 2, 3]

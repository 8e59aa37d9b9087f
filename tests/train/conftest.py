"""Training fixtures: a small converted sample dataset and a fast config."""

import os
import uuid

import pytest

from data_pipelines import atomic_io, sa1b_to_tfrecord, sample_data, storage, train_copy
from tests.shared_fixtures import build_once

IMAGE, GT = 128, 32  # vit_tiny at 128 px: 8x8 embedding, 32x32 masks
# The training tests' model: vit_tiny at 128 px, cut down to 2 encoder blocks
# (one windowed, one global) and one two-way decoder layer. Every kind of
# layer is still there; every cold compile of a train step (most of these
# tests' time on a 2-core CI host) takes about half as long.
TEST_MODEL = {"image_size": IMAGE, "encoder_depth": 2, "encoder_global_attn_indexes": (1,),
              "decoder_depth": 1}


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
  """{"train": dir, "eval": dir} of converted sample data (one copy per session)."""
  def build(root):
    dirs = {}
    for split, seed, n in (("train", 0, 16), ("eval", 1, 8)):
      raw = os.path.join(root, f"raw_{split}")
      sample_data.make_sample(raw, num_images=n, images_per_tar=8, height=96, width=128,
                              num_objects=3, seed=seed)
      out = os.path.join(root, split)
      sa1b_to_tfrecord.convert([raw], out, num_shards=2, workers=1, progress=False,
                               log=lambda *_: None,
                               copy=train_copy.TrainCopyConfig(image_size=IMAGE, gt_size=GT))
      dirs[split] = out
    return dirs
  return build_once(tmp_path_factory, "train_data", build)


def small_config(train_data, **changes):
  """tiny_demo shrunk for tests: ``TEST_MODEL``, 1 click + 1 mask-only pass,
  batch 8."""
  from samjax.commands.train import load_config
  c = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "experiments",
                               "configs", "tiny_demo.py"))
  c.model.overrides = dict(TEST_MODEL)
  c.data.train_dir, c.data.eval_dir = train_data["train"], train_data["eval"]
  c.data.batch_size, c.data.eval_batch_size, c.data.max_masks = 8, 8, 4
  c.sim.num_point_iters, c.sim.num_mask_only_iters = 1, 1
  c.total_steps, c.log_every, c.checkpoint_every = 6, 1, 3
  c.optim.warmup_steps, c.optim.decay_steps = 2, [4]
  c.eval_at_start = False
  c.async_checkpoints = False
  for k, v in changes.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def train_losses(workdir) -> dict[int, float]:
  """{step: training loss} from a workdir's metrics log (local or bucket);
  a step logged twice is an error, not a silent overwrite."""
  from samjax.train.metrics_store import read_metrics
  out = {}
  for rec in read_metrics(str(workdir)):
    if rec["split"] == "train":
      assert rec["step"] not in out, f"step {rec['step']} logged twice in {workdir}"
      out[rec["step"]] = rec["loss"]
  return out


def upload_folder(local_dir: str, remote_dir: str) -> str:
  """Copies every file under ``local_dir`` to the same place under ``remote_dir``."""
  for rel in storage.walk_files(local_dir):
    atomic_io.copy_file(storage.join(local_dir, rel), storage.join(remote_dir, rel))
  return remote_dir


def upload_train_data(gcs_server, train_data) -> dict:
  """``train_data`` copied to a new bucket: {"train": gs://.., "eval": gs://..}."""
  bucket = gcs_server.bucket(f"t-{uuid.uuid4().hex[:12]}")
  return {split: upload_folder(train_data[split], f"{bucket}/data/{split}")
          for split in ("train", "eval")}


@pytest.fixture(scope="session")
def reference_run(train_data, tmp_path_factory):
  """An uninterrupted 6-step run of ``small_config``, in-process (checkpoints
  at steps 3 and 6); shared by the loop and fault tests (read-only: tests
  copy it before changing anything). Returns [workdir, final metrics]."""
  def build(workdir):
    from samjax.train.loop import train_and_evaluate
    return [workdir, train_and_evaluate(small_config(train_data), workdir)]
  return build_once(tmp_path_factory, "reference_run", build)

"""``samjax eval`` with its data, results and per-image log on buckets (a
real fake-gcs-server and a real moto S3 server): killed with SIGKILL and
resumed, the numbers are those of an uninterrupted local run."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from data_pipelines import atomic_io, storage
from samjax.cli import main
from samjax.evaluation.per_image_log import (
  PerImageLog,
  PerImageLogError,
  image_file_name,
  log_path_for,
  read_records,
)
from samjax.evaluation.sample_sets import make_eval_set
from tests.inference.amg_helpers import KILLING_RUNNER

REPO = pathlib.Path(__file__).resolve().parents[2]
# Two clicks per mask: the follow-up click path runs, in seconds.
FLAGS = ["--max-points", "2", "--no-progress"]
METRICS = ("miou_1pt", "miou_1pt_oracle", "miou_curve", "num_images", "num_masks",
           "num_skipped_empty")


def points_args(checkpoint, data: dict, out: str, *extra) -> list[str]:
  return ["eval", "points", "--checkpoint", checkpoint, "--annotations", data["annotations"],
          "--images", data["images"], "--out", out, *FLAGS, *extra]


@pytest.fixture(scope="module")
def reference(tiny_official_pth, tmp_path_factory):
  """An uninterrupted local run: (results document, per-image records by id)."""
  root = tmp_path_factory.mktemp("eval_ref")
  data = make_eval_set(str(root / "set"))
  out = str(root / "points.json")
  assert main(points_args(tiny_official_pth, data, out)) == 0
  doc = json.loads(storage.read_text(out))
  return doc, _by_id(read_records(log_path_for(out)))


def _by_id(records: list[dict]) -> dict:
  return {r["image"]: r for r in records}


def test_killed_and_resumed_on_gcs_gives_the_local_numbers(gs_bucket, tiny_official_pth,
                                                           reference, capsys):
  """Data and checkpoint in the bucket, results and log too; kill -9
  halfway through storing image 11 (the second): only image 10 is stored,
  the rerun evaluates 11 and 12 and writes the local run's numbers."""
  data = make_eval_set(f"{gs_bucket}/set")
  checkpoint = f"{gs_bucket}/ckpt/tiny.pth"
  atomic_io.copy_file(tiny_official_pth, checkpoint)
  out = f"{gs_bucket}/results/points.json"
  log = log_path_for(out)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-c", KILLING_RUNNER, image_file_name(11), "1",
       *points_args(checkpoint, data, out)],
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert storage.listdir(log) == [image_file_name(10), "settings.json"]
  assert not storage.exists(out)  # no results from an incomplete run
  capsys.readouterr()
  assert main(points_args(checkpoint, data, out)) == 0
  doc = json.loads(storage.read_text(out))
  ref_doc, ref_records = reference
  assert {k: doc[k] for k in METRICS} == {k: ref_doc[k] for k in METRICS}
  assert doc["this_run"]["images_evaluated"] == 2 and doc["per_image_log"] == log
  assert doc["settings"]["annotations"] == data["annotations"]
  assert doc["model"]["checkpoint"] == checkpoint
  assert _by_id(read_records(log)) == ref_records  # every click and IoU
  # Other settings into the same results are refused, in one line.
  assert main(points_args(checkpoint, data, out, "--max-points", "3")) == 1
  err = capsys.readouterr().err
  assert "other settings" in err and "Traceback" not in err


def test_resumed_on_s3_gives_the_local_numbers(s3_bucket, tiny_official_pth, reference,
                                               capsys):
  data = make_eval_set(f"{s3_bucket}/set")
  out = f"{s3_bucket}/results/points.json"
  assert main(points_args(tiny_official_pth, data, out, "--limit", "1")) == 0
  assert main(points_args(tiny_official_pth, data, out)) == 0
  doc = json.loads(storage.read_text(out))
  ref_doc, ref_records = reference
  assert {k: doc[k] for k in METRICS} == {k: ref_doc[k] for k in METRICS}
  assert doc["this_run"]["images_evaluated"] == 2
  assert _by_id(read_records(log_path_for(out))) == ref_records


@pytest.fixture(params=["gs", "s3"])
def bucket(request):
  return request.getfixturevalue(f"{request.param}_bucket")


def test_the_per_image_log_on_a_bucket(bucket):
  """Reopened: finished images kept; other settings and damaged objects
  refused without touching anything."""
  path = f"{bucket}/r.images"
  log = PerImageLog(path, {"p": 1})
  log.append(7, {"v": [0.5]})
  log.append("a/b", {"v": [1.0]})
  assert storage.listdir(path) == ["image-7.json", "image-a%2Fb.json", "settings.json"]
  again = PerImageLog(path, {"p": 1})
  assert 7 in again and "a/b" in again and len(again) == 2
  with pytest.raises(PerImageLogError, match="other settings"):
    PerImageLog(path, {"p": 2})
  atomic_io.write_bytes(f"{path}/{image_file_name(7)}", b'{"image": "7", "v"')
  with pytest.raises(PerImageLogError, match=r"image-7\.json is damaged"):
    PerImageLog(path, {"p": 1})
  storage.remove(f"{path}/settings.json")
  with pytest.raises(PerImageLogError, match="no settings.json"):
    PerImageLog(path, {"p": 1})
  assert storage.listdir(path) == ["image-7.json", "image-a%2Fb.json"]


def test_edge_ground_truth_and_images_are_read_from_a_bucket(s3_bucket, tmp_path):
  """The edges protocol's inputs (images, .mat and PNG ground truth) read
  from a bucket equal the same files read locally."""
  import numpy as np

  from samjax.commands.eval_edges import list_image_ids
  from samjax.evaluation.edges_gt import ground_truth_files, read_ground_truth
  from samjax.evaluation.edges_sample import make_bsds_sample
  from samjax.inference.image_io import read_image
  ids = make_bsds_sample(f"{s3_bucket}/bsds", n_images=2)
  assert make_bsds_sample(str(tmp_path), n_images=2) == ids
  remote, local = list_image_ids(f"{s3_bucket}/bsds/images"), list_image_ids(
      str(tmp_path / "images"))
  assert sorted(remote) == sorted(local) == ids
  for image_id in ids:
    assert np.array_equal(read_image(remote[image_id]), read_image(local[image_id]))
  for folder in ("groundTruth", "groundTruth_png"):
    got = ground_truth_files(f"{s3_bucket}/bsds/{folder}", ids)
    want = ground_truth_files(str(tmp_path / folder), ids)
    for image_id in ids:
      a, b = read_ground_truth(got[image_id]), read_ground_truth(want[image_id])
      assert len(a) == len(b) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))

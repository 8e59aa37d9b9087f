"""``samjax eval edges`` end to end on the tiny random-weight model: numbers, resume, parity."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_pipelines.atomic_io import TEMP_MARKER
from samjax.commands.eval_edges import add_parser
from samjax.evaluation.edges_metrics import dataset_scores
from samjax.evaluation.edges_sample import make_bsds_sample
from samjax.evaluation.per_image_log import image_file_name, log_path_for, read_records

KEYS = ("ods", "ois", "ap", "r50")


@pytest.fixture(scope="module")
def bsds(tmp_path_factory):
  root = tmp_path_factory.mktemp("bsds")
  make_bsds_sample(str(root))
  return root


def read_json(path):
  return json.loads(Path(path).read_text())


def log_records(path):
  """The per-image records of a log folder (by image id here)."""
  return read_records(path)


def eval_edges(argv):
  """Parses like ``samjax eval edges ARGV`` (a parser of our own: the eval
  verb's own module registers ``add_parser``) and runs it."""
  parser = argparse.ArgumentParser(prog="samjax")
  verbs = parser.add_subparsers(dest="verb")
  evaluate = verbs.add_parser("eval").add_subparsers(dest="protocol")
  add_parser(evaluate)
  args = parser.parse_args(["eval", "edges", *argv])
  return args.func(args)


def test_eval_edges_runs_resumes_and_gives_the_same_numbers(bsds, tiny_official_pth, tmp_path,
                                                            capsys):
  out = str(tmp_path / "res" / "edges.json")
  # A 4x4 grid (48 masks) keeps the test short; the protocol code is the same.
  argv = ["--checkpoint", tiny_official_pth, "--images", str(bsds / "images"),
          "--gt", str(bsds / "groundTruth"), "--out", out, "--points-per-side", "4",
          "--no-progress", "--workers", "0"]
  assert eval_edges(argv) == 0
  first = read_json(out)
  row = capsys.readouterr().out.strip()
  assert row.startswith("edges | vit_tiny | ODS .") and row.endswith("| 3 images, 144 masks")
  for k in KEYS:
    assert 0.0 <= first[k] <= 1.0
  assert first["protocol"] == "edges" and first["num_images"] == 3
  assert first["code_version"]["samjax"] and first["image_ids"] == ["900001", "900002", "900003"]
  assert first["model"]["checkpoint"] == os.path.abspath(tiny_official_pth)
  assert first["settings"]["points_per_side"] == 4 and first["settings"]["thresholds"] == 99
  assert first["settings"]["max_dist"] == 0.0075
  log = log_path_for(out)
  records = log_records(log)
  assert len(records) == 3 and all(r["n_masks"] == 48 and len(r["cnt_r"]) == 99
                                   for r in records)

  # A kill in the middle of the last image's write: its temp file half
  # written, no file under its name. The rerun (scoring in a worker process
  # this time) redoes that image only and removes the temp file.
  last = Path(log) / image_file_name("900003")
  text = last.read_text()
  last.unlink()
  temp = Path(str(last) + TEMP_MARKER + "0badf00d")
  temp.write_text(text[:25])
  assert eval_edges([*argv[:-1], "1"]) == 0
  again = read_json(out)
  assert {k: again[k] for k in KEYS} == {k: first[k] for k in KEYS}
  assert again["this_run"]["images_evaluated"] == 1
  assert log_records(log) == records
  assert not temp.exists()

  # --limit scores the first N ids; all are in the log, so no image is redone.
  assert eval_edges([*argv, "--limit", "1"]) == 0
  one = read_json(out)
  assert one["image_ids"] == ["900001"] and one["num_images"] == 1
  assert one["this_run"]["images_evaluated"] == 0
  assert one["ois"] == dataset_scores([records[0]], 99)["ois"]

  # Other settings into the same log are refused.
  with pytest.raises(ValueError, match="other settings"):
    eval_edges([*argv, "--max-dist", "0.01"])


def test_eval_edges_defaults_are_the_papers():
  parser = argparse.ArgumentParser()
  add_parser(parser.add_subparsers())
  args = parser.parse_args(["edges", "--checkpoint", "c", "--images", "i", "--gt", "g",
                            "--out", "o.json"])
  assert (args.points_per_side, args.thresholds, args.max_dist) == (16, 99, 0.0075)


def test_eval_edges_refuses_missing_ground_truth_before_loading_the_model(bsds, tmp_path):
  gt = tmp_path / "gt"
  gt.mkdir()
  os.link(bsds / "groundTruth" / "900001.mat", gt / "900001.mat")
  with pytest.raises(FileNotFoundError, match=r"no ground truth .* 2 of 3 image"):
    eval_edges(["--checkpoint", "never-loaded.pth", "--images", str(bsds / "images"),
                "--gt", str(gt), "--out", str(tmp_path / "r.json")])


def test_samjax_and_official_predictors_give_the_same_edges(bsds, tiny_pair):
  import torch
  from segment_anything import SamPredictor as OfficialPredictor

  from samjax import SamPredictor
  from samjax.evaluation.edges_gt import read_bsds_mat
  from samjax.evaluation.edges_metrics import image_counts
  from samjax.evaluation.edges_pipeline import EdgeSettings, detect_edges
  from samjax.inference.image_io import read_image
  from samjax.loading import LoadedSam
  sam, model, params = tiny_pair
  image = read_image(str(bsds / "images" / "900002.jpg"))
  gt = read_bsds_mat(str(bsds / "groundTruth" / "900002.mat"))
  settings = EdgeSettings(points_per_side=4)
  ours = detect_edges(SamPredictor(LoadedSam(model, params)), image, settings)
  with torch.no_grad():
    theirs = detect_edges(OfficialPredictor(sam), image, settings)
  assert ours.n_masks == theirs.n_masks == 48 and ours.n_kept == theirs.n_kept
  np.testing.assert_allclose(ours.edges, theirs.edges, atol=1e-4)
  a = dataset_scores([image_counts(ours.edges, gt)], 99)
  b = dataset_scores([image_counts(theirs.edges, gt)], 99)
  for k in KEYS:
    assert a[k] == pytest.approx(b[k], abs=1e-3)

"""``samjax eval`` from the command line: documented keys, progress, errors."""

import json

import numpy as np
import pytest

from samjax.cli import main

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _args(eval_set, out, *extra, checkpoint="ckpt.pth", annotations=None):
  return ["eval", "points", "--checkpoint", checkpoint,
          "--annotations", annotations or eval_set["annotations"],
          "--images", eval_set["images"], "--out", str(out), *extra]


def test_points_writes_the_documented_results(tiny_official_pth, tiny_pair, eval_set,
                                              dataset, tmp_path, capsys):
  out = tmp_path / "r.json"
  rc = main(_args(eval_set, out, "--max-points", "1", "--limit", "1",
                  checkpoint=tiny_official_pth))
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  doc = json.loads(out.read_text())
  for key in ("miou_1pt", "miou_1pt_oracle", "miou_curve", "protocol", "settings", "model",
              "code_version", "num_images", "num_masks"):
    assert key in doc
  assert doc["protocol"] == "points" and doc["num_images"] == 1 and doc["num_masks"] == 4
  assert len(doc["miou_curve"]) == 1 and doc["settings"]["max_points"] == 1
  assert doc["model"]["variant"] == "vit_tiny" and doc["model"]["config"]["image_size"] == 256
  version = doc["code_version"]
  assert version["samjax"] and len(version["git_commit"]) == 40  # a git checkout
  assert "1/1 images" in captured.err and "img/s" in captured.err  # progress
  row = captured.out.strip().splitlines()[-1]
  assert row.startswith("points | vit_tiny | 1pt ") and "1 images, 4 masks" in row
  # The same first clicks through the official predictor give the same mIoU.
  from segment_anything import SamPredictor as OfficialPredictor

  from samjax.evaluation import points
  image_id = dataset.image_ids()[0]
  gts = [dataset.mask(a) for a in dataset.instances(image_id)]
  recs = points.evaluate_image(OfficialPredictor(tiny_pair[0]), dataset.load_image(image_id),
                               gts, max_points=1)
  assert doc["miou_1pt"] == pytest.approx(np.mean([r["ious"][0] for r in recs]), abs=1e-3)


def test_missing_inputs_are_one_line_errors(eval_set, tmp_path, capsys):
  missing = str(tmp_path / "nope.json")
  assert main(_args(eval_set, tmp_path / "r.json", annotations=missing)) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"samjax eval: error: --annotations: no such file or directory: {missing}"]
  assert main(["eval", "boxes", "--checkpoint", "x.pth", "--annotations",
               eval_set["annotations"], "--images", eval_set["images"], "--out",
               str(tmp_path / "r.json"), "--detections", missing]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"samjax eval: error: --detections: no such file: {missing}"]
  assert main(_args(eval_set, tmp_path / "r.json", checkpoint=missing)) == 1
  assert "--checkpoint: no such file" in capsys.readouterr().err
  assert not (tmp_path / "r.json").exists()


def test_eval_lists_its_protocols(capsys):
  with pytest.raises(SystemExit):
    main(["eval", "--help"])
  out = capsys.readouterr().out
  assert all(p in out for p in ("points", "boxes", "proposals"))

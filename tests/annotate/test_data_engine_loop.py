"""The model-in-the-loop cycle, end to end: an annotation round served by a
training workdir, `samjax data convert` of the output folder, a short
fine-tune from that workdir, a second round served by the new workdir, and
`samjax annotate stats` reporting both rounds."""

from __future__ import annotations

import json
import os

import pytest

from samjax.cli import main as samjax_main
from tests.annotate.conftest import annotate_server
from tests.train.conftest import GT, IMAGE, reference_run, small_config, train_data  # noqa: F401

# (image, positive clicks, seconds) of each scripted object.
ROUND_1 = [("img_0.jpg", [[120, 80]], 6.0), ("img_0.jpg", [[30, 160], [60, 170]], 4.0),
           ("img_1.jpg", [[100, 90]], 5.0), ("img_2.jpg", [[120, 60]], 3.0)]
ROUND_2 = [("img_2.jpg", [[60, 150]], 2.0)]


def _annotate_round(tmp_path, photos, checkpoint, out, objects):
  with annotate_server(tmp_path, "--images", photos, "--checkpoint", checkpoint,
                       "--out", str(out), "--annotator", "ann") as server:
    for image, points, seconds in objects:
      assert server.wait_ready(image)["ready"]
      status, pred = server.post("/api/predict", {"image": image, "points": points,
                                                  "labels": [1] * len(points)})
      assert status == 200, pred
      status, reply = server.post("/api/accept", {
          "image": image, "token": pred["token"], "candidate": pred["selected"],
          "points": points, "labels": [1] * len(points), "seconds": seconds,
          "interactions": len(points)})
      assert status == 200, reply


def test_annotate_convert_finetune_annotate_again(photos, reference_run, train_data,  # noqa: F811
                                                  tmp_path, capsys):
  from samjax.train.loop import train_and_evaluate
  round_1 = reference_run[0]
  out = tmp_path / "labels"
  _annotate_round(tmp_path, photos, round_1, out, ROUND_1)

  records = tmp_path / "records"
  assert samjax_main(["data", "convert", "--src", str(out), "--out", str(records),
                      "--shards", "1", "--workers", "1", "--train-size", str(IMAGE),
                      "--train-gt-size", str(GT)]) == 0
  manifest = json.loads((records / "manifest.json").read_text())
  assert manifest["num_records"] == 3 and manifest["num_masks"] == 4, manifest

  round_2 = str(tmp_path / "round_2")
  config = small_config(train_data, **{"data.train_dir": str(records), "data.eval_dir": "",
                                       "init.kind": "sam", "init.checkpoint": round_1,
                                       "total_steps": 2, "checkpoint_every": 2})
  train_and_evaluate(config, round_2)
  assert os.path.isdir(os.path.join(round_2, "checkpoints", "2")), os.listdir(round_2)

  _annotate_round(tmp_path, photos, round_2, out, ROUND_2)
  capsys.readouterr()
  assert samjax_main(["annotate", "stats", str(out), "--json"]) == 0
  rows = json.loads(capsys.readouterr().out)
  assert [(r["round"], r["masks"], r["images"]) for r in rows] == [
      (os.path.basename(round_1), 4, 3), ("round_2", 1, 1)]
  assert rows[0]["seconds_per_mask"] == pytest.approx(4.5)
  assert rows[0]["clicks_per_mask"] == pytest.approx(5 / 4)
  assert rows[1]["seconds_per_mask"] == pytest.approx(2.0)
  assert samjax_main(["annotate", "stats", str(out)]) == 0
  table = capsys.readouterr().out
  assert "s/mask" in table and "round_2" in table

  # The same folder as SA-1B tar shards converts to the same images and masks.
  tars = tmp_path / "tars"
  assert samjax_main(["annotate", "export", str(out), "--tar", str(tars),
                      "--per-tar", "2"]) == 0
  assert sorted(os.listdir(tars)) == ["sa_annotate_00000.tar", "sa_annotate_00001.tar"]
  again = tmp_path / "records_from_tars"
  assert samjax_main(["data", "convert", "--src", str(tars), "--out", str(again),
                      "--shards", "1", "--workers", "1", "--train-size", str(IMAGE),
                      "--train-gt-size", str(GT)]) == 0
  manifest = json.loads((again / "manifest.json").read_text())
  assert manifest["num_records"] == 3 and manifest["num_masks"] == 5

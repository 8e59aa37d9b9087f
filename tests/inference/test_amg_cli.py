"""`samjax amg` end to end: SA-1B JSON, resume, bad images, and the round trip
through `samjax data convert` and the grain pipeline."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import skimage.data
from PIL import Image

from samjax import SamAutomaticMaskGenerator, load_sam
from samjax.cli import main
from samjax.inference.mask_io import decode_rle

# Random tiny weights: low thresholds and no NMS so that masks survive.
SETTINGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh",
            "0", "--box-nms-thresh", "1.0", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tiny_official_pth):
  return tiny_official_pth


@pytest.fixture
def images(tmp_path):
  d = tmp_path / "images"
  d.mkdir()
  Image.fromarray(skimage.data.coffee()).save(d / "sa_1.jpg", quality=95)
  Image.fromarray(skimage.data.chelsea()).save(d / "sa_2.jpg", quality=95)
  (d / "broken.jpg").write_bytes(b"not a jpeg")
  return d


def test_amg_writes_sa1b_json_resumes_and_reports_bad_images(checkpoint, images, tmp_path,
                                                             capsys):
  out = tmp_path / "out"
  rc = main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
             "--overlays", *SETTINGS])
  err = capsys.readouterr().err
  assert rc == 0, err
  assert "broken.jpg" in err and "cannot read image" in err
  assert sorted(os.listdir(out)) == ["sa_1.json", "sa_1.png", "sa_2.json", "sa_2.png"]
  with open(out / "sa_2.json") as f:
    doc = json.load(f)
  assert doc["image"] == {"image_id": 2, "width": 451, "height": 300, "file_name": "sa_2.jpg"}
  anns = doc["annotations"]
  assert len(anns) == 48 and [a["id"] for a in anns] == list(range(48))
  decoded = np.asarray(Image.open(images / "sa_2.jpg").convert("RGB"))
  ref = SamAutomaticMaskGenerator(load_sam(checkpoint), points_per_side=4, pred_iou_thresh=0,
                                  stability_score_thresh=0, box_nms_thresh=1.0
                                  ).generate(decoded)
  for a, r in zip(anns, ref):
    assert isinstance(a["segmentation"]["counts"], str)
    np.testing.assert_array_equal(decode_rle(a["segmentation"]), r["segmentation"])
    assert a["area"] == r["area"] and a["bbox"] == r["bbox"]
    assert a["crop_box"] == [0, 0, 451, 300] and len(a["point_coords"]) == 1
    assert a["predicted_iou"] == r["predicted_iou"]
  # Resume: nothing redone; a missing JSON is redone alone.
  mtime = os.stat(out / "sa_1.json").st_mtime_ns
  os.remove(out / "sa_2.json")
  rc = main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
             *SETTINGS])
  assert rc == 0
  assert "1 image(s) labelled" in capsys.readouterr().out
  assert os.stat(out / "sa_1.json").st_mtime_ns == mtime
  assert os.path.exists(out / "sa_2.json")
  rc = main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
             *SETTINGS])
  assert rc == 0 and "already done" in capsys.readouterr().out


def test_amg_fails_only_when_nothing_processed(checkpoint, images, tmp_path, capsys):
  rc = main(["amg", "--checkpoint", checkpoint, "--images", str(images / "broken.jpg"),
             "--out", str(tmp_path / "o"), *SETTINGS])
  assert rc == 1 and "cannot read image" in capsys.readouterr().err
  rc = main(["amg", "--checkpoint", checkpoint, "--images", str(tmp_path / "nope"),
             "--out", str(tmp_path / "o"), *SETTINGS])
  assert rc == 1 and "no such file or directory" in capsys.readouterr().err


def test_amg_output_round_trips_through_convert_and_pipeline(checkpoint, images, tmp_path,
                                                             capsys):
  from data_pipelines import pipeline
  os.remove(images / "broken.jpg")
  out, conv = tmp_path / "sa1b", tmp_path / "tfrecord"
  assert main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
               "--copy-images", *SETTINGS]) == 0
  assert main(["data", "convert", "--src", str(out), "--out", str(conv), "--shards", "1",
               "--no-progress", "--train-size", "0"]) == 0, capsys.readouterr().err
  manifest = json.loads((conv / "manifest.json").read_text())
  assert manifest["num_records"] == 2 and not manifest["skipped"]
  docs = {d["image"]["image_id"]: d for d in
          (json.loads((out / f"sa_{i}.json").read_text()) for i in (1, 2))}
  cfg = pipeline.PipelineConfig(str(conv), batch_size=2, image_size=64, gt_size=32,
                                max_masks=64, num_epochs=1, shuffle=False, read_threads=1)
  batches = list(pipeline.make_iterator(cfg))
  assert len(batches) == 1
  b = batches[0]
  for j in range(2):
    doc = docs[int(b["image_id"][j])]
    h, w = doc["image"]["height"], doc["image"]["width"]
    assert tuple(b["original_size"][j]) == (h, w)
    eligible = [a for a in doc["annotations"] if a["area"] <= 0.9 * h * w]
    assert int(b["valid"][j].sum()) == len(eligible) > 0
  shutil.rmtree(conv)

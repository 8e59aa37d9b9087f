"""`samjax amg` with the official scripts/amg.py command line and output
layout, compared file by file with the official script's code path on the
same weights.

The official script is not part of the installed package; it is transcribed
in ``tests/official_amg_script.py``. The weights are the tiny random ones:
low thresholds and no NMS keep all 48 masks of a 4x4 grid (such weights
give few masks at the official thresholds). Inputs are PNGs, so OpenCV
(official) and PIL (samjax) decode the same pixels.
"""

from __future__ import annotations

import csv
import json
import os
import types

import numpy as np
import pytest
import skimage.data
from PIL import Image

from samjax.cli import main
from tests import official_amg_script

cv2 = pytest.importorskip("cv2")

# Official flag names, official script values where the test needs them.
AMG = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
       "box_nms_thresh": 1.0}
FLAGS = [f for k, v in AMG.items() for f in (f"--{k.replace('_', '-')}", str(v))]


def official_main(sam, input_dir, output, convert_to_rle):
  """The official script (transcribed) with ``sam`` as its vit_tiny model."""
  import segment_anything
  package = types.SimpleNamespace(
      SamAutomaticMaskGenerator=segment_anything.SamAutomaticMaskGenerator,
      sam_model_registry={"vit_tiny": lambda checkpoint: sam})
  official_amg_script.run(package, [
      "--input", str(input_dir), "--output", str(output), "--model-type", "vit_tiny",
      "--checkpoint", "(given)", "--device", "cpu", *FLAGS,
      *(["--convert-to-rle"] if convert_to_rle else [])])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("images")
  Image.fromarray(skimage.data.chelsea()).save(d / "cat.png")
  Image.fromarray(skimage.data.coffee()[:200, :260]).save(d / "cup.png")
  return d


def _files(root):
  return sorted(os.path.relpath(os.path.join(dp, f), root)
                for dp, _, fs in os.walk(root) for f in fs)


def _assert_same_csv(ours: str, ref: str):
  """Same header, ids, ints; floats up to float32-vs-torch rounding; areas
  up to the pixels that flipped."""
  with open(ours) as f:
    text = f.read()
  assert not text.endswith("\n")  # the official joins rows without a final newline
  a = list(csv.reader(text.split("\n")))
  with open(ref) as f:
    b = list(csv.reader(f.read().split("\n")))
  assert a[0] == b[0] and len(a) == len(b)
  for ra, rb in zip(a[1:], b[1:]):
    for col, x, y in zip(a[0], ra, rb):
      if col in ("predicted_iou", "stability_score"):
        assert abs(float(x) - float(y)) <= 1e-3, (col, x, y)
      elif col == "area":  # a flipped pixel (see the PNG test) moves it by one
        assert abs(int(x) - int(y)) <= 1e-3 * int(y), (col, x, y)
      elif col.startswith("point_input"):
        assert float(x) == float(y), (col, x, y)
      else:  # ints (crop box: floats exactly when the official's are)
        assert x == y, (col, x, y)


def test_official_command_line_writes_official_png_folders(tiny_pair, tiny_official_pth,
                                                           inputs, tmp_path, capsys):
  ours, ref = tmp_path / "ours", tmp_path / "ref"
  rc = main(["amg", "--checkpoint", tiny_official_pth, "--model-type", "vit_tiny",
             "--input", str(inputs), "--output", str(ours), "--device", "cpu",
             "--output-format", "official", "--no-progress", *FLAGS])
  assert rc == 0, capsys.readouterr().err
  official_main(tiny_pair[0], str(inputs), str(ref), convert_to_rle=False)
  files = _files(ref)
  assert files == _files(ours)
  assert "cat/47.png" in files and "cup/metadata.csv" in files  # 48 masks each
  pngs = [n for n in files if n.endswith(".png")]
  differ = []
  for name in pngs:
    with open(ours / name, "rb") as fa, open(ref / name, "rb") as fb:
      if fa.read() == fb.read():
        continue
    a = cv2.imread(str(ours / name), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(ref / name), cv2.IMREAD_UNCHANGED)
    # Different bytes only ever from different pixels (the encoding is the
    # official one): random weights leave a few logits within float
    # rounding of 0, so a mask may flip a pixel there.
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, name
    assert 0 < (a != b).mean() <= 1e-3, name
    differ.append(name)
  assert len(differ) <= 0.05 * len(pngs), differ
  for name in files:
    if name.endswith(".csv"):
      _assert_same_csv(ours / name, ref / name)
  # Rerun: everything is done already.
  rc = main(["amg", "--checkpoint", tiny_official_pth, "--input", str(inputs), "--output",
             str(ours), "--output-format", "official", "--no-progress", *FLAGS])
  assert rc == 0 and "already done" in capsys.readouterr().out


def test_convert_to_rle_writes_official_json_lists(tiny_pair, tiny_official_pth, inputs,
                                                   tmp_path, capsys):
  ours, ref = tmp_path / "ours", tmp_path / "ref"
  rc = main(["amg", "--checkpoint", tiny_official_pth, "--input", str(inputs),
             "--output", str(ours), "--output-format", "official", "--convert-to-rle",
             "--device", "cuda", "--no-progress", *FLAGS])
  assert rc == 0, capsys.readouterr().err
  official_main(tiny_pair[0], str(inputs), str(ref), convert_to_rle=True)
  assert _files(ours) == _files(ref) == ["cat.json", "cup.json"]
  for name in _files(ref):
    with open(ours / name) as fa, open(ref / name) as fb:
      a, b = json.load(fa), json.load(fb)
    assert len(a) == len(b) == 48
    same_masks = 0
    for ra, rb in zip(a, b):
      assert list(ra) == list(rb)  # same keys in the same order
      assert ra["segmentation"]["size"] == rb["segmentation"]["size"]
      same_masks += ra["segmentation"] == rb["segmentation"]
      assert abs(ra["area"] - rb["area"]) <= 1e-3 * rb["area"]
      for k in ("bbox", "point_coords", "crop_box"):
        assert ra[k] == rb[k] and type(ra[k]) is type(rb[k]), k
      for k in ("predicted_iou", "stability_score"):
        assert abs(ra[k] - rb[k]) <= 1e-3, k
    assert same_masks >= 0.95 * len(b)  # see the PNG test on single-pixel flips


def test_help_shows_every_default(capsys):
  with pytest.raises(SystemExit):
    main(["amg", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  for flag, default in [("--points-per-batch", "64"), ("--pred-iou-thresh", "0.88"),
                        ("--stability-score-thresh", "0.95"), ("--box-nms-thresh", "0.7"),
                        ("--crop-n-layers", "0"), ("--output-format", "sa1b"),
                        ("--min-mask-region-area", "0"), ("--points-per-side", "32")]:
    assert flag in text
    options = text[text.index("-h, --help"):]  # past the usage line
    after = options[options.index(flag + " "):]
    assert f"(default: {default})" in after[:400], flag
  for alias in ("--input", "--output", "--model-type", "--convert-to-rle", "--device"):
    assert alias in text

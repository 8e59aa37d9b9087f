"""`samjax segment` end to end: PNG overlay + COCO RLE JSON equal to the predictor."""

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from samjax import SamPredictor, load_sam
from samjax.cli import main
from samjax.inference.mask_io import decode_rle


@pytest.fixture(scope="module")
def checkpoint(tiny_official_pth):
  return tiny_official_pth


def test_segment_writes_png_and_rle(checkpoint, tmp_path, capsys):
  image = skimage.data.chelsea()  # 300x451
  img_path = str(tmp_path / "cat.jpg")
  Image.fromarray(image).save(img_path, quality=95)
  decoded = np.asarray(Image.open(img_path).convert("RGB"))
  out_png, out_json = str(tmp_path / "out.png"), str(tmp_path / "out.json")
  rc = main(["segment", "--checkpoint", checkpoint, "--image", img_path,
             "--point", "200,150", "--point", "300,100,0", "--box", "50,40,400,280",
             "--multimask", "--out", out_png, "--json", out_json])
  assert rc == 0, capsys.readouterr().err
  png = Image.open(out_png)
  assert png.size == (3 * 451, 300)  # three panels side by side
  with open(out_json) as f:
    record = json.load(f)
  anns = record["annotations"]
  assert len(anns) == 3
  assert [a["predicted_iou"] for a in anns] == sorted([a["predicted_iou"] for a in anns],
                                                      reverse=True)
  predictor = SamPredictor(load_sam(checkpoint))
  predictor.set_image(decoded)
  masks, scores, _ = predictor.predict(np.array([[200.0, 150.0], [300.0, 100.0]]),
                                       np.array([1, 0]), np.array([50.0, 40, 400, 280]))
  for ann in anns:
    mask = decode_rle(ann["segmentation"])
    assert mask.shape == (300, 451)
    np.testing.assert_array_equal(mask, masks[ann["id"]])
    assert ann["area"] == int(mask.sum())
    assert abs(ann["predicted_iou"] - scores[ann["id"]]) < 1e-6


@pytest.mark.parametrize("args, message", [
    (["--point", "1,2,5"], "label must be 0 or 1"),
    (["--box", "1,2,3"], "expected 4-4 numbers"),
    (["--point", "a,b"], "comma-separated numbers"),
])
def test_segment_rejects_bad_prompt_syntax(checkpoint, tmp_path, capsys, args, message):
  with pytest.raises(SystemExit):
    main(["segment", "--checkpoint", checkpoint, "--image", "x.png", "--out",
          str(tmp_path / "o.png")] + args)
  assert message in capsys.readouterr().err


def test_segment_reports_unreadable_image_and_outside_point(checkpoint, tmp_path, capsys):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not a jpeg")
  assert main(["segment", "--checkpoint", checkpoint, "--image", str(bad), "--point", "1,1",
               "--out", str(tmp_path / "o.png")]) == 1
  assert "cannot read image" in capsys.readouterr().err
  good = tmp_path / "ok.png"
  Image.fromarray(skimage.data.chelsea()).save(good)
  assert main(["segment", "--checkpoint", checkpoint, "--image", str(good), "--point",
               "9999,1", "--out", str(tmp_path / "o.png")]) == 1
  assert "outside" in capsys.readouterr().err

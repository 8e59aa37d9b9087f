"""The semi-automatic stage: pre-filled masks appear as an auto layer the
annotator accepts or rejects, and the uncovered-pixels overlay is exactly
the pixels no accepted object covers."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

from samjax.annotate.masks import apply_strokes
from samjax.annotate.prefill import STRICT_AMG, AutoLayer
from samjax.inference.automatic_mask_generator import SamAutomaticMaskGenerator
from samjax.inference.image_io import read_image
from samjax.inference.mask_io import decode_rle
from samjax.inference.predictor import SamPredictor
from samjax.loading import load_sam
from tests.annotate.browser import Page
from tests.annotate.conftest import annotate_server

BOXES = [[60, 20, 200, 150], [0, 100, 120, 180], [150, 0, 240, 60]]
SCORES = [0.9, 0.8, 0.2]  # the last is under --prefill-min-score 0.5


def _canvas_alpha(page, canvas_id):
  """[H, W] alpha of a layer canvas (backed at the image's size)."""
  w, h, data = page.page.evaluate(
      "(id) => { const c = document.getElementById(id);"
      " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
      " const a = []; for (let i = 3; i < d.length; i += 4) a.push(d[i]);"
      " return [c.width, c.height, a]; }", canvas_id)
  return np.array(data, np.uint8).reshape(h, w)


def test_detections_prefill_accept_reject_and_uncovered(chromium_browser, photos, trained_pth,
                                                        tmp_path):
  dets = [{"image_id": zlib.crc32(b"img_0.jpg"), "category_id": 1, "score": s,
           "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b, s in zip(BOXES, SCORES)]
  dets.append({"file_name": "img_1.jpg", "bbox": [10, 10, 100, 100], "score": 0.95})
  (tmp_path / "dets.json").write_text(json.dumps(dets))
  out = tmp_path / "out"
  with annotate_server(tmp_path, "--images", photos, "--checkpoint", trained_pth,
                       "--out", str(out), "--prefill", str(tmp_path / "dets.json")) as server:
    page = Page(chromium_browser, server.url)
    try:
      auto = page.state("auto")
      assert [a["id"] for a in auto] == ["auto-0", "auto-1"]
      assert page.page.locator("#auto li").count() == 2
      page.key("a")  # accept the first pending auto object
      assert [o["source"] for o in page.state("objects")] == ["auto"]
      assert [a["id"] for a in page.state("auto")] == ["auto-1"]
      page.key("r")  # reject the next one
      assert page.state("auto") == []
      page.click(30, 170)  # a manual object beside the accepted auto one
      page.key("Enter")
      page.click(200, 20)  # one more, then deleted from the list
      page.key("Enter")
      assert [o["id"] for o in page.state("objects")] == [0, 1, 2]
      page.page.click('#objects li[data-id="2"] .delete')
      page.wait()
      assert [o["id"] for o in page.state("objects")] == [0, 1]
      page.page.click('#objects li[data-id="0"] .edit')  # re-edit the auto object
      page.wait()
      page.key("e")
      page.drag([(100, 60), (140, 80)])
      page.key("Enter")
      assert [(o["id"], o["source"]) for o in page.state("objects")] == [
          (0, "auto-edited"), (1, "manual")]
      edit = page.sent("accept")[-1]
      page.key("u")
      page.page.wait_for_function(
          "document.getElementById('uncovered-fraction').textContent !== ''")
      page.wait()
      alpha = _canvas_alpha(page, "uncovered-canvas")
      page.screenshot("5_uncovered.png")
    finally:
      page.close()

  doc = json.loads((out / "img_0.json").read_text())
  assert [a["source"] for a in doc["annotations"]] == ["auto-edited", "manual"]
  union = np.zeros(alpha.shape, bool)
  for a in doc["annotations"]:
    union |= decode_rle(a["segmentation"])
  assert union.any() and (~union).any()
  np.testing.assert_array_equal(alpha > 0, ~union)

  # The accepted auto object is the predictor's mask for the detection box,
  # with the eraser stroke of its re-edit.
  predictor = SamPredictor(load_sam(trained_pth))
  predictor.set_image(read_image(os.path.join(photos, "img_0.jpg")))
  masks, _, _ = predictor.predict(box=np.array(BOXES[0], np.float32), multimask_output=False)
  auto = doc["annotations"][0]
  assert auto["box"] == [float(v) for v in BOXES[0]]
  assert edit["replaces"] == 0 and [st["mode"] for st in edit["strokes"]] == ["erase"]
  np.testing.assert_array_equal(decode_rle(auto["segmentation"]),
                                apply_strokes(masks[0], edit["strokes"]))
  layer = AutoLayer(str(out), "img_0.jpg")
  assert layer.decided == {"auto-0": "accepted", "auto-1": "rejected"}


def test_amg_prefill_is_the_generators_confident_masks(photos, trained_pth, tmp_path):
  out = tmp_path / "out"
  with annotate_server(tmp_path, "--images", photos, "--checkpoint", trained_pth,
                       "--out", str(out), "--prefill", "amg",
                       "--prefill-points-per-side", "8") as server:
    server.wait_ready("img_2.jpg")
    status, objects = server.get("/api/objects?image=img_2.jpg")
  assert status == 200
  generator = SamAutomaticMaskGenerator(load_sam(trained_pth), points_per_side=8,
                                        output_mode="coco_rle", **STRICT_AMG)
  want = generator.generate(read_image(os.path.join(photos, "img_2.jpg")))
  assert want, "the trained model keeps some confident masks on this photo"
  got = AutoLayer(str(out), "img_2.jpg").objects
  assert [o["segmentation"] for o in got] == [r["segmentation"] for r in want]
  assert [o["id"] for o in objects["auto"]] == [f"auto-{i}" for i in range(len(want))]

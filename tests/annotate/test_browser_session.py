"""A scripted annotation session in headless Chromium: what the page saves is
exactly the predictor's output for the same prompts, with the eraser
stroke applied."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from samjax.annotate.masks import apply_strokes, stability_score
from samjax.inference.image_io import read_image
from samjax.inference.mask_io import decode_rle
from samjax.inference.predictor import SamPredictor
from samjax.loading import load_sam
from tests.annotate.browser import Page
from tests.annotate.conftest import annotate_server


def _replay_first_object(predictor, accept):
  """The official interactive loop for the accepted prompts: click 1 gives
  three candidates, the picked one's low-res logits refine clicks 2 and 3."""
  points = np.array(accept["points"])
  labels = np.array(accept["labels"])
  _, _, low = predictor.predict(points[:1], labels[:1], multimask_output=True)
  picked = 1  # the page's key "2"
  masks = iou = None
  for n in (2, 3):
    masks, iou, new_low = predictor.predict(points[:n], labels[:n],
                                            mask_input=low[picked:picked + 1],
                                            multimask_output=False)
    low, picked = new_low, 0
  return masks[0], iou[0]


def test_scripted_session_saves_the_predictors_masks(chromium_browser, photos, trained_pth,
                                                      tmp_path):
  out = tmp_path / "out"
  with annotate_server(tmp_path, "--images", photos, "--checkpoint", trained_pth,
                       "--out", str(out), "--annotator", "tester") as server:
    page = Page(chromium_browser, server.url)
    try:
      assert page.state("image") == "img_0.jpg"
      assert "Enter" in page.page.inner_text("#shortcuts")
      page.click(120, 80)
      assert page.state("candidates") == 3
      page.key("2")
      assert page.state("selected") == 1
      page.click(150, 100)
      page.click(40, 150, negative=True)
      page.key("z")  # undo / redo restore the page's snapshots, no new request
      assert page.page.evaluate("obj.points.length") == 2
      page.key("y")
      assert page.page.evaluate("obj.points.length") == 3
      page.screenshot("1_three_clicks.png")
      page.key("e")
      page.drag([(100, 60), (130, 70), (160, 75)])
      page.screenshot("2_erased.png")
      page.key("Enter")
      assert len(page.state("objects")) == 1
      page.key("p")
      page.drag([(60, 20), (200, 150)])
      page.key("Enter")

      assert [o["id"] for o in page.state("objects")] == [0, 1]
      page.screenshot("3_two_objects.png")
      page.key("n")
      assert page.state("image") == "img_1.jpg"
      page.key("b")  # an object painted with the brush alone
      page.drag([(20, 20), (60, 40), (80, 90)])
      page.key("Enter")
      assert len(page.state("objects")) == 1
      page.key("ArrowLeft")
      assert page.state("image") == "img_0.jpg"
      assert [o["id"] for o in page.state("objects")] == [0, 1]
      page.screenshot("4_back.png")
      accepts = page.sent("accept")
      timings = page.state("timings")
    finally:
      page.close()

  doc = json.loads((out / "img_0.json").read_text())
  first, second = doc["annotations"]
  assert len(accepts) == 3 and first["source"] == second["source"] == "manual"
  assert [c[2] for c in first["clicks"]] == [1, 1, 0]
  assert first["interactions"] >= 4 and first["seconds"] > 0 and first["strokes"] == 1
  assert first["annotator"] == "tester" and first["checkpoint"] == trained_pth
  assert second["box"] is not None and second["clicks"] == []
  assert {t["kind"] for t in timings} == {"click", "switch"}
  painted = json.loads((out / "img_1.json").read_text())["annotations"]
  brush = accepts[2]["strokes"]
  assert [s["mode"] for s in brush] == ["brush"] and painted[0]["source"] == "manual"
  np.testing.assert_array_equal(decode_rle(painted[0]["segmentation"]),
                                apply_strokes(np.zeros((180, 240), bool), brush))

  predictor = SamPredictor(load_sam(trained_pth))
  predictor.set_image(read_image(os.path.join(photos, "img_0.jpg")))
  mask, iou = _replay_first_object(predictor, accepts[0])
  strokes = accepts[0]["strokes"]
  assert len(strokes) == 1 and strokes[0]["mode"] == "erase"
  erased = apply_strokes(mask, strokes)
  assert (erased != mask).any()  # the stroke removed pixels of the mask
  np.testing.assert_array_equal(decode_rle(first["segmentation"]), erased)
  assert first["predicted_iou"] == pytest.approx(float(iou), abs=1e-6)

  logits, iou, _ = predictor.predict(box=np.array(accepts[1]["box"]), multimask_output=False,
                                     return_logits=True)
  np.testing.assert_array_equal(decode_rle(second["segmentation"]), logits[0] > 0)
  assert second["predicted_iou"] == pytest.approx(float(iou[0]), abs=1e-6)
  assert second["stability_score"] == pytest.approx(stability_score(logits[0]), abs=1e-4)

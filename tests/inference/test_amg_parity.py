"""SamAutomaticMaskGenerator vs the official one on the same weights and photographs.

The tiny model has random weights: its masks are image-texture patterns that
hardly depend on the point, so every box spans its whole crop. To keep many
masks alive, thresholds are low and NMS thresholds 1.0 (nothing suppressed)
where the point is to compare hundreds of masks; NMS itself is compared
with torchvision on random boxes in test_amg_utils.py. With crops, the
crop-edge filter would drop every crop mask of such a model, so those runs
disable it on both sides (it is compared directly in test_amg_utils.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from samjax import SamAutomaticMaskGenerator
from samjax.inference import amg_utils, mask_io
from samjax.loading import LoadedSam

MIN_IOU, MIN_FRACTION, COUNT_TOL = 0.95, 0.99, 0.01


@pytest.fixture(scope="module")
def pair():
  from tests.conftest import official_pair
  sam, model, params = official_pair("vit_tiny")
  return sam, LoadedSam(model, params)


def _run_both(pair, image, **kw):
  from segment_anything import SamAutomaticMaskGenerator as Official
  sam, loaded = pair
  ours = SamAutomaticMaskGenerator(loaded, **kw).generate(image)
  with torch.no_grad():
    ref = Official(sam, **kw).generate(image)
  return ours, ref


def _mask_iou(ours, ref):
  a = np.stack([r["segmentation"] for r in ours]).reshape(len(ours), -1).astype(np.float32)
  b = np.stack([r["segmentation"] for r in ref]).reshape(len(ref), -1).astype(np.float32)
  inter = a @ b.T
  union = a.sum(1)[:, None] + b.sum(1)[None] - inter
  return inter / np.maximum(union, 1.0)


def _assert_match(ours, ref, min_count):
  assert len(ref) >= min_count, "test setup: too few official masks to compare"
  assert abs(len(ours) - len(ref)) <= COUNT_TOL * len(ref)
  iou = _mask_iou(ours, ref)
  # One-to-one: the outputs come in the same order, so match by position,
  # and check that the positional match is also the best match.
  n = min(len(ours), len(ref))
  diag = iou[np.arange(n), np.arange(n)]
  assert (diag >= MIN_IOU).mean() >= MIN_FRACTION, np.sort(diag)[:5]
  assert (iou.max(axis=0) >= MIN_IOU).mean() >= MIN_FRACTION
  same = [i for i in range(n) if diag[i] >= MIN_IOU]
  for i in same:
    o, r = ours[i], ref[i]
    assert o["point_coords"] == r["point_coords"] and o["crop_box"] == r["crop_box"]
    assert abs(o["predicted_iou"] - r["predicted_iou"]) < 1e-3
    assert np.allclose(o["stability_score"], r["stability_score"], atol=2e-2, equal_nan=True)
    assert np.abs(np.subtract(o["bbox"], r["bbox"])).max() <= 2
    assert abs(o["area"] - r["area"]) <= 0.01 * max(r["area"], 100)


def test_parity_no_crops_all_masks(pair):
  image = skimage.data.coffee()  # 400x600
  ours, ref = _run_both(pair, image, points_per_side=8, pred_iou_thresh=0.0,
                        stability_score_thresh=0.0, box_nms_thresh=1.0)
  assert len(ref) == 8 * 8 * 3
  _assert_match(ours, ref, 192)
  r = ours[0]
  assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords",
                    "stability_score", "crop_box"}
  assert r["segmentation"].shape == image.shape[:2] and r["segmentation"].dtype == bool
  assert r["area"] == int(r["segmentation"].sum())


def test_parity_filters_and_nms(pair):
  # IoU and stability filters active (a small offset spreads stability
  # scores of this model's low-magnitude logits); default box NMS.
  image = skimage.data.chelsea()  # 300x451, odd width
  kw = dict(points_per_side=8, pred_iou_thresh=0.13, stability_score_offset=0.02,
            stability_score_thresh=0.45, points_per_batch=32)
  ours, ref = _run_both(pair, image, **kw, box_nms_thresh=1.0)
  assert 0 < len(ref) < 8 * 8 * 3  # something was filtered, something left
  _assert_match(ours, ref, 20)
  ours, ref = _run_both(pair, image, **kw)  # box_nms_thresh 0.7
  _assert_match(ours, ref, 1)


def test_parity_with_crop_layers(pair, monkeypatch):
  import segment_anything.automatic_mask_generator as official_amg
  monkeypatch.setattr(official_amg, "is_box_near_crop_edge",
                      lambda boxes, *a, **k: torch.zeros(len(boxes), dtype=torch.bool))
  monkeypatch.setattr(amg_utils, "is_box_near_crop_edge",
                      lambda boxes, *a, **k: np.zeros(len(boxes), bool))
  image = skimage.data.coffee()
  ours, ref = _run_both(pair, image, points_per_side=2, crop_n_layers=1,
                        pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        box_nms_thresh=1.0, crop_nms_thresh=1.0)
  assert len({tuple(r["crop_box"]) for r in ref}) == 5
  _assert_match(ours, ref, 5 * 12)
  # Crop masks are pasted into the full image frame.
  crop = next(r for r in ours if r["crop_box"] != [0, 0, 600, 400])
  x, y, w, h = crop["crop_box"]
  seg = crop["segmentation"]
  assert seg.shape == (400, 600) and seg.sum() == seg[y:y + h, x:x + w].sum()


def test_crop_layers_default_filters_and_crop_nms(pair):
  # Unpatched: edge filter and crop NMS as in production.
  image = skimage.data.chelsea()
  ours, ref = _run_both(pair, image, points_per_side=2, crop_n_layers=1,
                        crop_n_points_downscale_factor=2, pred_iou_thresh=0.0,
                        stability_score_thresh=0.0)
  _assert_match(ours, ref, 1)


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_output_modes(pair, mode):
  from pycocotools import mask as mask_utils
  from segment_anything.utils.amg import coco_encode_rle, rle_to_mask
  _, loaded = pair
  image = skimage.data.chelsea()
  kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
            box_nms_thresh=1.0)
  binary = SamAutomaticMaskGenerator(loaded, **kw).generate(image)
  recs = SamAutomaticMaskGenerator(loaded, output_mode=mode, **kw).generate(image)
  assert len(recs) == len(binary) == 48
  for r, b in zip(recs, binary):
    seg = r["segmentation"]
    assert seg["size"] == [300, 451]
    if mode == "uncompressed_rle":
      assert all(isinstance(c, int) for c in seg["counts"])
      np.testing.assert_array_equal(rle_to_mask(seg), b["segmentation"])
      assert sum(seg["counts"][1::2]) == r["area"]
      assert coco_encode_rle(seg)["counts"] == mask_io.encode_rle(b["segmentation"])["counts"]
    else:
      assert isinstance(seg["counts"], str)
      decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
      np.testing.assert_array_equal(decoded.astype(bool), b["segmentation"])
      assert int(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()})) \
          == r["area"]


def test_min_mask_region_area_matches_official(pair):
  pytest.importorskip("cv2")  # the official clean-up needs OpenCV; ours uses scipy
  image = skimage.data.coffee()
  ours, ref = _run_both(pair, image, points_per_side=2, pred_iou_thresh=0.0,
                        stability_score_thresh=0.0, box_nms_thresh=1.0,
                        min_mask_region_area=400)
  _assert_match(ours, ref, 10)


def test_bad_arguments(pair):
  _, loaded = pair
  with pytest.raises(ValueError, match="exactly one"):
    SamAutomaticMaskGenerator(loaded, points_per_side=None)
  with pytest.raises(ValueError, match="output_mode"):
    SamAutomaticMaskGenerator(loaded, output_mode="png")
  with pytest.raises(ValueError, match="points_per_batch must be >= 1"):
    SamAutomaticMaskGenerator(loaded, points_per_batch=0)
  with pytest.raises(ValueError, match="one per layer"):
    SamAutomaticMaskGenerator(loaded, points_per_side=None, crop_n_layers=1,
                              point_grids=[amg_utils.build_point_grid(4)])
  with pytest.raises(TypeError, match="load_sam"):
    SamAutomaticMaskGenerator(object())
  with pytest.raises(ValueError, match="RGBA"):
    SamAutomaticMaskGenerator(loaded, points_per_side=2).generate(
        np.zeros((8, 8, 4), np.uint8))


@pytest.mark.parametrize("setting", ["pred_iou_thresh", "stability_score_thresh",
                                     "stability_score_offset", "box_nms_thresh",
                                     "crop_nms_thresh", "crop_overlap_ratio"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_settings_are_errors_not_zero_masks(pair, setting, value):
  """NaN compares False with everything: pred_iou_thresh=nan would silently
  keep no mask at all (the official generator returns []). A clear error instead."""
  _, loaded = pair
  with pytest.raises(ValueError, match=rf"{setting} must be a finite number"):
    SamAutomaticMaskGenerator(loaded, points_per_side=2, **{setting: value})

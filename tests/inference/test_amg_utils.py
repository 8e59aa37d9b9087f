"""AMG helpers vs ``segment_anything.utils.amg`` and torchvision's NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils import amg as official
from torchvision.ops.boxes import batched_nms

from samjax.inference import amg_kernels, amg_utils, mask_io


@pytest.mark.parametrize("size", [(400, 600), (300, 451), (1500, 2250), (37, 23)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_and_grids_match_official(size, layers):
  assert amg_utils.generate_crop_boxes(size, layers, 512 / 1500) == \
      official.generate_crop_boxes(size, layers, 512 / 1500)
  for a, b in zip(amg_utils.build_all_layer_point_grids(32, layers, 2),
                  official.build_all_layer_point_grids(32, layers, 2)):
    np.testing.assert_array_equal(a, b)


def test_crop_edge_filter_matches_official():
  rng = np.random.default_rng(0)
  crop, orig = [100, 50, 400, 300], [0, 0, 600, 400]
  boxes = rng.integers(0, 300, (500, 4))
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
  boxes[::7, 2] = 299  # touches the crop's right edge (crop frame)
  ref = official.is_box_near_crop_edge(torch.as_tensor(boxes), crop, orig).numpy()
  np.testing.assert_array_equal(amg_utils.is_box_near_crop_edge(boxes, crop, orig), ref)
  assert ref.any() and not ref.all()


@pytest.mark.parametrize("n", [1, 7, 64, 300])
@pytest.mark.parametrize("thresh", [0.3, 0.7])
def test_nms_matches_torchvision(n, thresh):
  rng = np.random.default_rng(n)
  xy = rng.uniform(0, 200, (n, 2))
  wh = rng.uniform(0, 80, (n, 2))
  boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32).round()
  boxes[::5] = boxes[0]                # exact duplicates
  boxes[3::11] = 0.0                   # degenerate [0,0,0,0] (empty masks)
  scores = rng.uniform(0, 1, n).astype(np.float32)
  scores[::3] = 0.5                    # ties resolve in input order
  ref = batched_nms(torch.as_tensor(boxes), torch.as_tensor(scores),
                    torch.zeros(n), iou_threshold=thresh).numpy()
  np.testing.assert_array_equal(amg_kernels.nms_host(boxes, scores, thresh), ref)


def test_rle_and_boxes_match_official():
  rng = np.random.default_rng(0)
  masks = rng.uniform(size=(6, 37, 23)) > 0.6
  masks[1] = False
  masks[2] = True
  masks[3, 0, 0] = True
  ref_rles = official.mask_to_rle_pytorch(torch.as_tensor(masks))
  ref_boxes = official.batched_mask_to_box(torch.as_tensor(masks)).numpy()
  for m, rle, box in zip(masks, ref_rles, ref_boxes):
    assert amg_utils.mask_to_uncompressed_rle(m) == rle
    assert mask_io.encode_rle(m) == official.coco_encode_rle(rle)
    assert amg_utils.mask_to_box_xyxy(m) == box.tolist()
  stats = amg_kernels.mask_stats  # device boxes: same rule, via an identity upscale
  low = np.where(masks, 5.0, -5.0).astype(np.float32)
  eye_h, eye_w = np.eye(37, dtype=np.float32), np.eye(23, dtype=np.float32)
  _, _, boxes = stats(low, np.arange(6, dtype=np.int32), eye_h, eye_w,
                      np.ones(37, bool), np.ones(23, bool), np.float32(1.0))
  np.testing.assert_array_equal(np.asarray(boxes), ref_boxes)


def test_stability_score_matches_official():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (5, 30, 40)).astype(np.float32)
  logits[4] = -3.0  # empty at both thresholds -> 0/0 = NaN, as the official
  ref = official.calculate_stability_score(torch.as_tensor(logits), 0.0, 1.0).numpy()
  _, got, _ = amg_kernels.mask_stats(
      logits, np.arange(5, dtype=np.int32), np.eye(30, dtype=np.float32),
      np.eye(40, dtype=np.float32), np.ones(30, bool), np.ones(40, bool), np.float32(1.0))
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6, equal_nan=True)


def test_padded_size_class_is_exact():
  # Padding the crop frame to its size class must not change anything.
  rng = np.random.default_rng(2)
  low = rng.normal(0, 3, (4, 64, 64)).astype(np.float32)
  idx = np.arange(4, dtype=np.int32)
  ops = amg_kernels.upscale_operands(64, 256, (171, 256), (300, 451))
  assert ops[0].shape == (320, 64) and ops[1].shape == (512, 64)
  _, stab, boxes = amg_kernels.mask_stats(low, idx, *ops, np.float32(1.0))
  masks = np.asarray(amg_kernels.binary_masks(low, idx, *ops))
  assert not masks[:, 300:].any() and not masks[:, :, 451:].any()
  from samjax.inference.transforms import postprocess_masks
  full = np.array(postprocess_masks(low, (171, 256), (300, 451), 256))
  np.testing.assert_array_equal(masks[:, :300, :451], full > 0)
  ref = official.calculate_stability_score(torch.as_tensor(full), 0.0, 1.0).numpy()
  np.testing.assert_allclose(np.asarray(stab), ref, rtol=1e-6)
  ref_boxes = official.batched_mask_to_box(torch.as_tensor(full > 0)).numpy()
  np.testing.assert_array_equal(np.asarray(boxes), ref_boxes)


def _blobs():
  m = np.zeros((60, 80), bool)
  m[5:40, 5:50] = True
  m[10:13, 10:14] = False   # small hole
  m[20:35, 20:40] = False   # large hole
  m[50:53, 60:62] = True    # small island
  m[45:58, 5:20] = True     # large island
  return m


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [10, 100, 10_000])
def test_remove_small_regions(mode, area):
  m = _blobs()
  got, changed = amg_utils.remove_small_regions(m, area, mode)
  try:
    import cv2
  except ImportError:
    cv2 = None
  if cv2 is not None:
    ref, ref_changed = official.remove_small_regions(m, area, mode)
    np.testing.assert_array_equal(got, ref)
    assert changed == ref_changed
  if mode == "holes" and area == 100:
    assert got[11, 11] and not got[25, 25] and changed
  if mode == "islands" and area == 10_000:  # all small: the largest is kept
    assert got.sum() == max(np.bincount(__import__("scipy").ndimage.label(
        m, np.ones((3, 3)))[0].ravel())[1:])

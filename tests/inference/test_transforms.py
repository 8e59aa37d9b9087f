"""Official-equivalent transforms: resize rounding, coordinates, mask post-processing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from samjax.inference.transforms import (
  apply_boxes,
  apply_coords,
  get_preprocess_shape,
  postprocess_masks,
  resize_longest_side,
)


@pytest.mark.parametrize("hw", [(400, 600), (1500, 1000), (37, 23), (301, 481), (1024, 1024)])
def test_resize_and_coords_match_official(hw):
  official = ResizeLongestSide(1024)
  assert get_preprocess_shape(*hw, 1024) == official.get_preprocess_shape(*hw, 1024)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
  np.testing.assert_array_equal(resize_longest_side(image, 1024), official.apply_image(image))
  pts = rng.uniform(0, min(hw), (5, 2))
  np.testing.assert_allclose(apply_coords(pts, hw, 1024), official.apply_coords(pts, hw))
  boxes = rng.uniform(0, min(hw), (3, 4))
  np.testing.assert_allclose(apply_boxes(boxes, hw, 1024), official.apply_boxes(boxes, hw))


@pytest.mark.parametrize("input_size, original", [((683, 1024), (400, 600)),
                                                  ((1024, 683), (1500, 1000)),
                                                  ((1024, 1024), (37, 37))])
def test_postprocess_matches_torch_interpolate(input_size, original):
  """The composed per-axis matrices equal the official two bilinear resizes."""
  x = np.random.default_rng(1).normal(0, 3, (2, 3, 256, 256)).astype(np.float32)
  t = F.interpolate(torch.from_numpy(x), (1024, 1024), mode="bilinear", align_corners=False)
  t = t[..., :input_size[0], :input_size[1]]
  t = F.interpolate(t, original, mode="bilinear", align_corners=False).numpy()
  ours = np.asarray(postprocess_masks(x, input_size, original, 1024))
  assert ours.shape == t.shape
  # torch computes source positions in float32; ours in float64 -> ~1e-4.
  assert np.abs(ours - t).max() < 5e-4
  assert ((ours > 0) == (t > 0)).mean() > 0.9999

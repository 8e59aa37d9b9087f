"""Edge NMS (structured-edge toolbox postprocessing) and the per-mask edge response."""

import numpy as np
import pytest
from scipy import ndimage

from samjax.evaluation.edges_nms import conv_tri, edge_nms
from samjax.evaluation.edges_response import masks_edge_response

H, W = 48, 64


def blurred_step_edges(axis: int, at: int, sigma: float = 2.0) -> np.ndarray:
  """Sobel magnitude of a blurred step whose middle lies on row/column ``at``."""
  idx = np.arange(H if axis == 0 else W)
  step = np.clip(idx - at + 0.5, 0.0, 1.0)  # 0 | 0.5 at ``at`` | 1
  image = np.broadcast_to(step[:, None] if axis == 0 else step[None, :], (H, W))
  image = ndimage.gaussian_filter(image.astype(float), sigma, mode="nearest")
  mag = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
  return mag / mag.max()


@pytest.mark.parametrize("axis", [0, 1])
def test_edge_nms_thins_a_blurred_step_edge_to_one_pixel(axis):
  edges = blurred_step_edges(axis, at=25)
  assert ((edges > 0.1).sum(axis=axis) >= 5).all()  # several pixels wide before
  thin = edge_nms(edges)
  assert thin.dtype == np.float32 and thin.min() >= 0.0 and thin.max() <= 1.0
  # Away from the 5-pixel border ramp, exactly one pixel across the edge, on it.
  inner = thin[5:-5, :] if axis == 1 else thin[:, 5:-5]
  on = np.nonzero(inner)
  assert (np.count_nonzero(inner, axis=axis) == 1).all()
  assert set((on[1] if axis == 1 else on[0]).tolist()) == {25}


def test_edge_nms_thins_a_diagonal_ridge_and_ramps_the_border():
  yy, xx = np.mgrid[:H, :W]
  ridge = np.exp(-((xx - yy - 8) ** 2) / (2 * 2.0 ** 2))  # along x - y = 8
  thin = edge_nms(ridge)
  rows = np.count_nonzero(thin[5:-5], axis=1)
  assert (rows == 1).all()
  ys, xs = np.nonzero(thin[5:-5])
  np.testing.assert_array_equal(xs - (ys + 5), 8)
  assert not thin[0].any() and not thin[:, 0].any()  # the border ramp's zero


def test_conv_tri_is_the_triangle_filter():
  delta = np.zeros((11, 11))
  delta[5, 5] = 1.0
  f = np.array([1, 2, 3, 4, 5, 4, 3, 2, 1]) / 25
  np.testing.assert_allclose(conv_tri(delta, 4)[1:10, 1:10], np.outer(f, f), atol=1e-15)
  np.testing.assert_allclose(conv_tri(np.ones((4, 5)), 4), 1.0)  # symmetric padding


def test_mask_edge_response_is_sobel_on_the_boundary_band_max_over_kept_masks():
  logits = np.full((3, 20, 30), -8.0, np.float32)
  logits[0, 5:15, 5:12] = 8.0   # a box
  logits[1, 2:10, 18:28] = 8.0  # another
  logits[2, :, :] = 8.0         # dropped by keep below
  r = np.asarray(masks_edge_response(logits, np.array([True, True, False])))
  band0 = np.zeros((20, 30), bool)
  band0[4:16, 4:13] = True
  band0[6:14, 6:11] = False
  band1 = np.zeros((20, 30), bool)
  band1[1:11, 17:29] = True
  band1[3:9, 19:27] = False
  np.testing.assert_array_equal(r > 0, band0 | band1)
  # Each band pixel has the Sobel magnitude of the probability map.
  p = 1 / (1 + np.exp(-logits[0].astype(np.float64)))
  sobel = np.hypot(ndimage.sobel(p, 0, mode="nearest"), ndimage.sobel(p, 1, mode="nearest"))
  np.testing.assert_allclose(r[band0], sobel[band0], rtol=1e-5)

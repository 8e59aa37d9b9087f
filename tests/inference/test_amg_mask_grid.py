"""The generator upscales only the embedding cells its crop reads.

``amg_kernels.crop_mask_grid`` picks the top-left grid cells whose low-res
logits the crop's post-processing weighs; outside them the upscaling
matrices must be exactly zero, or skipping those cells would change masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from samjax.inference import amg_kernels as K
from samjax.inference.transforms import get_preprocess_shape


@pytest.mark.parametrize("crop_size", [(400, 600), (600, 400), (512, 512), (1500, 2250),
                                       (37, 1000), (333, 100)])
def test_mask_grid_covers_every_weighted_low_res_pixel(crop_size):
  grid, image_size = 64, 1024
  low = 4 * grid
  input_size = get_preprocess_shape(*crop_size, image_size)
  rows, cols, _, _ = K.upscale_operands(low, image_size, input_size, crop_size)
  gh, gw = K.crop_mask_grid(rows, cols, grid)
  # Exact skip: no weight on the cells left out ...
  assert not rows[:, 4 * gh:].any() and not cols[:, 4 * gw:].any()
  # ... buckets of grid / 16 cells, the long side whole, the short side cut.
  assert gh % 4 == 0 and gw % 4 == 0
  long_axis = int(np.argmax(crop_size))
  assert (gh, gw)[long_axis] == grid
  short = (gh, gw)[1 - long_axis]
  needed = -(-(input_size[1 - long_axis] + 4) // 16)  # cells under the image, + interpolation
  assert short <= min(grid, -(-needed // 4) * 4)
  if max(crop_size) >= 1.2 * min(crop_size):  # a real saving, not only a bound
    assert short < grid


def test_mask_grid_small_grids_and_degenerate_operands():
  rows = np.zeros((64, 64), np.float32)
  cols = np.zeros((64, 64), np.float32)
  rows[:, :5] = 1.0   # low-res rows 0..4 -> cells 0..1 (grid 16: buckets of 1)
  cols[:, :64] = 1.0
  assert K.crop_mask_grid(rows, cols, 16) == (2, 16)
  big_rows, big_cols = np.zeros((64, 256), np.float32), np.ones((64, 256), np.float32)
  big_rows[:, :5] = 1.0  # grid 64: cells 0..1 -> a bucket of 4 cells
  assert K.crop_mask_grid(big_rows, big_cols, 64) == (4, 64)
  # No weight at all (an empty crop): at least one bucket.
  assert K.crop_mask_grid(np.zeros_like(rows), cols, 16) == (1, 16)

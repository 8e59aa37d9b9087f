"""COCO RLE parsing and reduced-size rasterisation agree with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_pipelines import rle


def _random_masks(rng, n=25):
  out = []
  for k in range(n):
    h, w = (int(v) for v in rng.integers(1, 70, 2))
    m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
    if k % 4 == 0:  # blobs: long runs that cross column boundaries
      yy, xx = np.mgrid[:h, :w]
      m = (((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (h * w) / 5).astype(np.uint8)
    if k == 1:
      m[:] = 1
    if k == 2:
      m[:] = 0
    out.append(m)
  return out


def test_parse_counts_matches_pycocotools():
  rng = np.random.default_rng(0)
  for m in _random_masks(rng):
    enc = mask_utils.encode(np.asfortranarray(m))
    runs = rle.parse_counts(enc["counts"].decode())
    # Re-encoding our runs through pycocotools' uncompressed path must give
    # back the same mask.
    back = mask_utils.decode(mask_utils.frPyObjects(
        {"size": list(m.shape), "counts": runs.tolist()}, *m.shape))
    np.testing.assert_array_equal(back, m)
    rle.check_counts(runs, *m.shape)
    assert rle.area(runs) == int(m.sum())


@pytest.mark.parametrize("out_hw", [(7, 9), None, (2, 1), (131, 97)])
def test_decode_resized_equals_sampled_full_decode(out_hw):
  rng = np.random.default_rng(1)
  for m in _random_masks(rng):
    h, w = m.shape
    oh, ow = out_hw or (h, w)
    runs = rle.parse_counts(mask_utils.encode(np.asfortranarray(m))["counts"])
    got = rle.decode_resized([runs, runs], h, w, oh, ow)
    want = m[rle.sample_grid(h, oh)][:, rle.sample_grid(w, ow)]
    assert got.shape == (2, oh, ow) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)


def test_decode_resized_of_nothing_has_the_right_shape():
  assert rle.decode_resized([], 10, 10, 4, 5).shape == (0, 4, 5)


@pytest.mark.parametrize("bad, what", [
    ("0a\x7f", "alphabet"),
    ("0`", "truncated"),
])
def test_malformed_counts_are_named(bad, what):
  with pytest.raises(rle.RLEError, match=what):
    rle.parse_counts(bad)


def test_check_counts_rejects_wrong_total():
  runs = rle.parse_counts(mask_utils.encode(np.asfortranarray(
      np.ones((4, 5), np.uint8)))["counts"])
  with pytest.raises(rle.RLEError, match="4x6"):
    rle.check_counts(runs, 4, 6)


def test_batch_parse_and_raster_equal_one_by_one():
  rng = np.random.default_rng(2)
  h, w = 23, 31
  masks = [(rng.random((h, w)) < p).astype(np.uint8) for p in (0.0, 1.0, 0.3, 0.7, 0.5)]
  masks.append(np.zeros((h, w), np.uint8))
  masks[-1][5:9, 3:20] = 1  # a handful of runs only
  strings = [mask_utils.encode(np.asfortranarray(m))["counts"] for m in masks]
  runs, offsets = rle.parse_counts_batch(strings)
  assert len(offsets) == len(masks) + 1
  for i, s in enumerate(strings):
    np.testing.assert_array_equal(runs[offsets[i]:offsets[i + 1]], rle.parse_counts(s))
  assert rle.check_counts_batch(runs, offsets, h, w) == -1
  assert rle.check_counts_batch(runs, offsets, h, w + 1) == 0
  got = rle.decode_resized_batch(runs, offsets, h, w, 11, 13)
  want = np.stack(masks)[:, rle.sample_grid(h, 11)][:, :, rle.sample_grid(w, 13)]
  np.testing.assert_array_equal(got, want)

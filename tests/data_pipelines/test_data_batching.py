"""PadBatch: padded batches from compact examples; recycled buffers never leak."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from data_pipelines import batching, decode

CFG = decode.DecodeConfig(image_size=16, gt_size=8, max_masks=5)


def _example(i: int) -> dict:
  """Compact example i with varying image size, mask count and mask size."""
  rng = np.random.default_rng(i)
  rh, rw = (16, 9 + i % 7) if i % 2 else (5 + i % 11, 16)
  n, gh, gw = i % 6, (rh + 1) // 2, (rw + 1) // 2
  return {"image": rng.integers(1, 255, (rh, rw, 3), np.uint8),
          "masks": rng.integers(1, 2, (n, gh, gw), np.uint8, endpoint=True),
          "boxes": rng.random((n, 4), np.float32) + 1,
          "points": rng.random((n, 2), np.float32) + 1,
          "original_size": np.array((rh * 3, rw * 3), np.int32),
          "image_id": np.array(i + 1, np.int64), "num_skipped": np.int32(i % 3)}


def _reference(examples: list[dict], batch: int) -> list[dict]:
  out = []
  for start in range(0, len(examples) - batch + 1, batch):
    b = decode.empty_batch(CFG, batch)
    b["num_skipped"] = np.zeros((batch,), np.int32)
    for j, ex in enumerate(examples[start:start + batch]):
      decode.pad_into(b, j, ex)
      b["num_skipped"][j] = ex["num_skipped"]
    out.append(b)
  return out


def _batches(examples: list[dict], batch: int):
  ds = grain.MapDataset.source(examples).to_iter_dataset(grain.ReadOptions(num_threads=0))
  return iter(batching.PadBatch(ds, batch, CFG))


def test_recycled_buffers_equal_fresh_padding():
  examples = [_example(i) for i in range(23)]
  want = _reference(examples, 3)
  it = _batches(examples, 3)
  got, buffers = [], set()
  for b in it:  # copy and drop each batch: the pool reuses its buffers
    got.append({k: v.copy() for k, v in b.items()})
    buffers.add(b["image"].__array_interface__["data"][0])
    del b
  assert len(got) == len(want) == 7  # partial batch dropped
  assert len(buffers) == 1  # really recycled
  for g, w in zip(got, want, strict=True):
    assert g.keys() == w.keys()
    for k in g:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def test_batches_still_held_are_never_overwritten():
  examples = [_example(i) for i in range(24)]
  held = list(_batches(examples, 2))  # every batch kept alive
  view = held[0]["image"][0]  # a view also pins its buffer
  snapshot = view.copy()
  for g, w in zip(held, _reference(examples, 2), strict=True):
    for k in g:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)
  it = _batches(examples, 2)
  first = next(it)["image"][0]
  for _ in it:
    pass
  np.testing.assert_array_equal(first, _reference(examples, 2)[0]["image"][0])
  np.testing.assert_array_equal(view, snapshot)


def test_batch_size_must_be_positive():
  with pytest.raises(ValueError, match="batch_size"):
    batching.PadBatch(grain.MapDataset.source([]).to_iter_dataset(), 0, CFG)

"""Training-resolution copies: stored next to exact originals, used when they fit."""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import (
  dataset_layout,
  decode,
  example_codec,
  pipeline,
  rle,
  sa1b_to_tfrecord,
  tfrecord,
  train_copy,
)


def _records(out_dir):
  out = []
  for s in dataset_layout.load_manifest(out_dir)["shards"]:
    for _, data in tfrecord.iter_frames(os.path.join(out_dir, s["file"])):
      out.append(example_codec.decode(data))
  return out


def _cfg(data_dir, **kw):
  base = {"batch_size": 2, "image_size": 64, "gt_size": 32, "max_masks": 32,
          "read_threads": 1, "num_epochs": 1, "shuffle": False}
  base.update(kw)
  return pipeline.PipelineConfig(data_dir, **base)


def _batches(data_dir, **kw):
  return list(pipeline.make_iterator(_cfg(data_dir, **kw)))


def test_copies_decode_to_the_training_size_next_to_untouched_originals(
    converted_copy_dir, converted_plain_dir):
  m = dataset_layout.load_manifest(converted_copy_dir)
  assert m["train_copy"]["image_size"] == 64 and m["train_copy"]["gt_size"] == 32
  assert m["train_copy"]["num_image_copies"] == m["num_records"] == 10
  assert m["train_copy"]["failed"] == []
  assert m["feature_spec"]["train/image/encoded"] == {
      "type": "bytes", "per_mask": None, "optional": True}
  plain = {r["image/id"]: r for r in _records(converted_plain_dir)}
  for r in _records(converted_copy_dir):
    ref = plain[r["image/id"]]
    assert r["image/encoded"] == ref["image/encoded"]  # original bytes kept as-is
    assert r["mask/counts"] == ref["mask/counts"]
    h, w = r["image/height"], r["image/width"]
    rh, rw = decode.resized_shape(h, w, 64)
    assert (r["train/image/height"], r["train/image/width"]) == (rh, rw)
    small = Image.open(io.BytesIO(r["train/image/encoded"]))
    assert small.format == "JPEG" and small.mode == "RGB" and small.size == (rw, rh)
    # Close to decoding the original at full size and resizing it.
    want = np.asarray(Image.open(io.BytesIO(r["image/encoded"])).convert("RGB").resize(
        (rw, rh), Image.BILINEAR), np.float64)
    assert np.abs(np.asarray(small, np.float64) - want).mean() < 3
    # Stored masks == the originals sampled on the G grid (pycocotools decode).
    gh, gw = decode.resized_shape(h, w, 32)
    assert (r["train/mask/height"], r["train/mask/width"]) == (gh, gw)
    full = mask_utils.decode([{"size": [h, w], "counts": c} for c in r["mask/counts"]])
    got = mask_utils.decode([{"size": [gh, gw], "counts": c} for c in r["train/mask/counts"]])
    np.testing.assert_array_equal(got, full[rle.sample_grid(h, gh)][:, rle.sample_grid(w, gw)])


def test_pipeline_reads_the_copy_and_gives_the_same_targets(converted_copy_dir, monkeypatch):
  copies = {r["image/id"]: r for r in _records(converted_copy_dir)}
  seen = []
  real = decode.decode_image

  def spy(jpeg, size, reduced=True, resize_filter="bilinear"):
    seen.append(jpeg)
    return real(jpeg, size, reduced, resize_filter)

  monkeypatch.setattr(decode, "decode_image", spy)
  with_copy = _batches(converted_copy_dir)
  small = {r["train/image/encoded"] for r in copies.values()}
  assert len(seen) == 10 and set(seen) == small  # never the original JPEG
  seen.clear()
  without = _batches(converted_copy_dir, use_train_copy=False)
  assert len(seen) == 10 and not set(seen) & small
  for a, b in zip(with_copy, without, strict=True):
    for k in a:
      if k != "image":  # masks, boxes, points, valid, sizes, ids: bit-identical
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() < 6
    for j, image_id in enumerate(a["image_id"]):
      rh, rw = a["image_size"][j]
      want = np.asarray(Image.open(io.BytesIO(copies[int(image_id)]["train/image/encoded"])))
      np.testing.assert_array_equal(a["image"][j, :rh, :rw], want)  # decoded, not resized
      assert not a["image"][j, rh:].any() and not a["image"][j, :, rw:].any()


def test_plain_conversion_and_other_sizes_use_the_originals(converted_copy_dir,
                                                            converted_plain_dir):
  m = dataset_layout.load_manifest(converted_plain_dir)
  assert m["train_copy"] is None
  assert not any(k.startswith("train/") for k in m["feature_spec"])
  assert not any(k.startswith("train/") for r in _records(converted_plain_dir) for k in r)
  plain = _batches(converted_plain_dir)
  forced = _batches(converted_copy_dir, use_train_copy=False)
  for a, b in zip(plain, forced, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # A pipeline size the copies were not made for falls back to the originals.
  other = {"image_size": 48, "gt_size": 16}
  for a, b in zip(_batches(converted_plain_dir, **other), _batches(converted_copy_dir, **other),
                  strict=True):
    assert a["image"].shape == (2, 48, 48, 3) and a["masks"].shape == (2, 32, 16, 16)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_copy_options_are_part_of_the_plan(sample_dir, tmp_path, copy_config):
  out = str(tmp_path / "out")
  quiet = {"progress": False, "log": lambda *_: None}
  sa1b_to_tfrecord.convert([sample_dir], out, 2, copy=None, **quiet)
  with pytest.raises(ValueError, match="--overwrite"):
    sa1b_to_tfrecord.convert([sample_dir], out, 2, copy=copy_config, **quiet)
  m = sa1b_to_tfrecord.convert([sample_dir], out, 2, copy=copy_config, overwrite=True, **quiet)
  assert m["train_copy"]["num_image_copies"] == 10


def test_image_not_larger_than_the_copy_size_gets_mask_copy_only(copy_config):
  buf = io.BytesIO()
  Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "JPEG")
  counts = [mask_utils.encode(np.asfortranarray(np.ones((30, 40), np.uint8)))["counts"]]
  got = train_copy.make(buf.getvalue(), 30, 40, counts, copy_config)
  assert "train/image/encoded" not in got
  assert (got["train/mask/height"], got["train/mask/width"]) == (24, 32)
  none = train_copy.make(buf.getvalue(), 30, 40, counts,
                         dataclasses.replace(copy_config, gt_size=0))
  assert none == {}
  with pytest.raises(ValueError, match="quality"):
    train_copy.TrainCopyConfig(quality=0)


def test_failed_copy_keeps_the_original_record(sample_dir, tmp_path, monkeypatch,
                                               copy_config):
  real = train_copy.make
  calls = []

  def flaky(jpeg, height, width, counts, cfg):
    calls.append(1)
    if len(calls) % 3 == 0:
      raise OSError("disk hiccup")
    return real(jpeg, height, width, counts, cfg)

  monkeypatch.setattr(train_copy, "make", flaky)
  out = str(tmp_path / "out")
  m = sa1b_to_tfrecord.convert([sample_dir], out, 2, copy=copy_config, progress=False,
                      log=lambda *_: None)
  recs = _records(out)
  failed = m["train_copy"]["failed"]
  assert m["num_records"] == len(recs) == 10
  assert len(failed) == 3 and all("disk hiccup" in f["reason"] for f in failed)
  assert sum("train/image/encoded" not in r for r in recs) == len(failed)
  assert m["train_copy"]["num_image_copies"] == 10 - len(failed)
  assert len(_batches(out)) == 5  # records without a copy read through the fallback


def test_incomplete_copy_group_is_named():
  ex = example_codec.encode({"image_id": 1, "width": 4, "height": 2}, b"jpeg", [],
                            {"train/image/encoded": b"x", "train/image/height": 1,
                             "train/image/width": 2})
  assert example_codec.decode(ex)["train/image/width"] == 2
  from tensorflow_datasets.proto import tf_example_pb2
  msg = tf_example_pb2.Example.FromString(ex)
  del msg.features.feature["train/image/width"]
  with pytest.raises(example_codec.ExampleError, match="train/image.*incomplete"):
    example_codec.decode(msg.SerializeToString(), "shard#3")

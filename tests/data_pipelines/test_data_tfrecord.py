"""Converted shards: framing, CRC and Example layout read back independently.

The reader below shares no code with data_pipelines: a table-driven CRC32C
and a hand-written protobuf wire-format decoder for tf.train.Example. If
TensorFlow happens to be installed, tf.data reads the shards too.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import tarfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_pipelines import dataset_layout, example_codec, tfrecord

# --- independent CRC32C (Castagnoli, reflected polynomial 0x82F63B78) -------

_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _TABLE.append(_c)


def crc32c_slow(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- independent protobuf wire decoder -------------------------------------

def _varint(buf, i):
  shift = result = 0
  while True:
    b = buf[i]
    i += 1
    result |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return result, i


def _fields(buf):
  """Yields (field_number, wire_type, value) of one message."""
  i = 0
  while i < len(buf):
    key, i = _varint(buf, i)
    num, wt = key >> 3, key & 7
    if wt == 0:
      v, i = _varint(buf, i)
    elif wt == 2:
      n, i = _varint(buf, i)
      v, i = buf[i:i + n], i + n
    elif wt == 5:
      v, i = buf[i:i + 4], i + 4
    else:
      raise AssertionError(f"unexpected wire type {wt}")
    yield num, wt, v


def parse_example(buf: bytes) -> dict:
  """tf.train.Example bytes -> {key: ("bytes"|"float"|"int64", [values])}."""
  (num, wt, features), = list(_fields(buf))
  assert (num, wt) == (1, 2)  # Example.features
  out = {}
  for num, wt, entry in _fields(features):
    assert (num, wt) == (1, 2)  # Features.feature map entry
    kv = {n: v for n, _, v in _fields(entry)}
    key = kv[1].decode()
    (kind, _, lst), = list(_fields(kv[2]))
    vals = []
    for n, w, v in _fields(lst):
      assert n == 1
      if kind == 1:
        vals.append(bytes(v))
      elif kind == 2:  # packed floats
        vals.extend(struct.unpack(f"<{len(v) // 4}f", v) if w == 2 else struct.unpack("<f", v))
      else:  # packed int64 varints
        if w == 2:
          j = 0
          while j < len(v):
            x, j = _varint(v, j)
            vals.append(x - (1 << 64) if x >= 1 << 63 else x)
        else:
          vals.append(v - (1 << 64) if v >= 1 << 63 else v)
    out[key] = ({1: "bytes", 2: "float", 3: "int64"}[kind], vals)
  return out


def read_frames(path):
  data = pathlib.Path(path).read_bytes()
  i, out = 0, []
  while i < len(data):
    (n,) = struct.unpack_from("<Q", data, i)
    (len_crc,) = struct.unpack_from("<I", data, i + 8)
    assert len_crc == masked(crc32c_slow(data[i:i + 8])), f"{path}@{i} length crc"
    payload = data[i + 12:i + 12 + n]
    (data_crc,) = struct.unpack_from("<I", data, i + 12 + n)
    assert data_crc == masked(crc32c_slow(payload)), f"{path}@{i} data crc"
    out.append((i, 16 + n, payload))
    i += 16 + n
  return out


def source_pairs(sample_dir):
  """{file_name: (jpg bytes, json dict)} straight from the tars."""
  out = {}
  for name in sorted(os.listdir(sample_dir)):
    with tarfile.open(os.path.join(sample_dir, name)) as tf:
      files = {m.name: tf.extractfile(m).read() for m in tf}
    for n, b in files.items():
      if n.endswith(".jpg"):
        out[n] = (b, json.loads(files[n[:-4] + ".json"]))
  return out


# --- tests ------------------------------------------------------------------

def test_crc_reference_values():
  assert crc32c_slow(b"123456789") == 0xE3069283  # the CRC-32C check value
  assert tfrecord.masked_crc32c(b"123456789") == masked(0xE3069283)


@pytest.mark.parametrize("which", ["converted_dir", "converted_copy_dir",
                                   "converted_plain_dir"])
def test_frames_crc_index_and_layout_independently(which, request):
  converted_dir = request.getfixturevalue(which)
  manifest = dataset_layout.load_manifest(converted_dir)
  spec = manifest["feature_spec"]
  required = {k for k, v in spec.items() if not v.get("optional")}
  assert required == set(example_codec.FEATURES)
  total = 0
  for shard in manifest["shards"]:
    path = os.path.join(converted_dir, shard["file"])
    frames = read_frames(path)
    idx = [tuple(map(int, line.split()))
           for line in pathlib.Path(path + ".idx").read_text().splitlines()]
    assert idx == [(o, n) for o, n, _ in frames]
    assert len(frames) == shard["num_records"]
    for _, _, payload in frames:
      ex = parse_example(payload)
      assert required <= set(ex) <= set(spec)
      for key, (kind, _) in ex.items():
        assert kind == spec[key]["type"], key
      n = len(ex["mask/counts"][1])
      assert n > 0 and len(ex["mask/bbox"][1]) == 4 * n
      if "train/mask/counts" in ex:
        assert len(ex["train/mask/counts"][1]) == n
      assert ex["image/format"][1] == [b"jpeg"]
      total += 1
  assert total == manifest["num_records"] == 10


@pytest.mark.parametrize("which", ["converted_dir", "converted_copy_dir"])
def test_every_image_and_mask_round_trips_exactly(sample_dir, which, request):
  converted_dir = request.getfixturevalue(which)
  src = source_pairs(sample_dir)
  seen = set()
  manifest = dataset_layout.load_manifest(converted_dir)
  for shard in manifest["shards"]:
    for _, _, payload in read_frames(os.path.join(converted_dir, shard["file"])):
      ex = example_codec.decode(payload)
      name = ex["image/file_name"].decode()
      jpg, meta = src[name]
      seen.add(name)
      assert ex["image/encoded"] == jpg  # bytes kept, never re-encoded
      assert ex["image/id"] == meta["image"]["image_id"]
      assert (ex["image/height"], ex["image/width"]) == (
          meta["image"]["height"], meta["image"]["width"])
      anns = meta["annotations"]
      assert len(ex["mask/counts"]) == len(anns)
      h, w = ex["image/height"], ex["image/width"]
      ours = mask_utils.decode([{"size": [h, w], "counts": c} for c in ex["mask/counts"]])
      theirs = mask_utils.decode([a["segmentation"] for a in anns])
      np.testing.assert_array_equal(ours, theirs)
      assert ours.any(axis=(0, 1)).all()  # no empty masks
      np.testing.assert_array_equal(ex["mask/id"], [a["id"] for a in anns])
      np.testing.assert_array_equal(ex["mask/area"], [a["area"] for a in anns])
      np.testing.assert_array_equal(ex["mask/bbox"],
                                    np.float32([a["bbox"] for a in anns]))
      np.testing.assert_array_equal(ex["mask/predicted_iou"],
                                    np.float32([a["predicted_iou"] for a in anns]))
      np.testing.assert_array_equal(ex["mask/stability_score"],
                                    np.float32([a["stability_score"] for a in anns]))
      np.testing.assert_array_equal(
          ex["mask/point_coords"], np.float32([p for a in anns for p in a["point_coords"]]))
  assert seen == set(src)


def test_sample_has_nested_masks_and_is_deterministic(sample_dir, sample_settings, tmp_path):
  from data_pipelines import sample_data
  again = sample_data.make_sample(str(tmp_path), **sample_settings)
  for p in again:
    ref = pathlib.Path(sample_dir, os.path.basename(p))
    assert pathlib.Path(p).read_bytes() == ref.read_bytes()
  # whole/part/subpart: some mask lies strictly inside another.
  _, meta = next(iter(source_pairs(sample_dir).values()))
  ms = mask_utils.decode([a["segmentation"] for a in meta["annotations"]]).astype(bool)
  nested = [(i, j) for i in range(ms.shape[2]) for j in range(ms.shape[2])
            if i != j and ms[..., i].sum() < ms[..., j].sum()
            and not (ms[..., i] & ~ms[..., j]).any()]
  assert nested


def test_tensorflow_reads_the_shards_if_installed(converted_dir):
  tf = pytest.importorskip("tensorflow")
  manifest = dataset_layout.load_manifest(converted_dir)
  files = [os.path.join(converted_dir, s["file"]) for s in manifest["shards"]]
  n = sum(1 for _ in tf.data.TFRecordDataset(files))
  assert n == manifest["num_records"]


def test_corrupted_frame_is_detected(converted_dir, tmp_path):
  manifest = dataset_layout.load_manifest(converted_dir)
  src = os.path.join(converted_dir, manifest["shards"][0]["file"])
  data = bytearray(pathlib.Path(src).read_bytes())
  data[40] ^= 0xFF
  bad = tmp_path / "bad.tfrecord"
  bad.write_bytes(bytes(data))
  with pytest.raises(tfrecord.CorruptRecordError, match="bad.tfrecord@0: data CRC"):
    list(tfrecord.iter_frames(str(bad)))


def test_sample_object_and_subpart_sizes_follow_the_arguments():
  from data_pipelines import sample_data
  lib = sample_data._Library()
  for index in range(3):
    _, masks = sample_data.make_image(index, 120, 180, 2, seed=5, lib=lib,
                                      object_size=(0.5, 0.5), subpart_size=0.3)
    heights = [np.ptp(np.nonzero(m.any(1))[0]) + 1 for m, kind in masks if kind == "whole"]
    assert heights and max(heights) <= 60 and max(heights) >= 40  # 0.5 x 120, some occlusion
    sub = [m.sum() for m, kind in masks if kind == "subpart"]
    assert sub and max(sub) > 100  # a disc of radius 0.3 x 30+ px, far above the default's

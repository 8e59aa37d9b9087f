"""Converter: bad inputs of every kind are skipped and reported; resume is exact."""

from __future__ import annotations

import io
import json
import os
import pathlib
import tarfile

import pytest
from PIL import Image

from data_pipelines import cli as data_cli
from data_pipelines import dataset_layout, example_codec, sa1b_to_tfrecord, sample_data, tfrecord


def _records(out_dir):
  m = dataset_layout.load_manifest(out_dir)
  out = []
  for s in m["shards"]:
    for _, data in tfrecord.iter_frames(os.path.join(out_dir, s["file"])):
      out.append(example_codec.decode(data))
  return out


def _pair(i, **kw):
  jpg, meta = sample_data.make_pair(i, 64, 96, num_objects=2, seed=9, **kw)
  return jpg, json.loads(meta)


def _build_bad_inputs(d):
  """One tar with a corruption of each kind, one truncated tar, loose files."""
  members = []
  good_jpg, good = _pair(0)
  members += [("sa_1.jpg", good_jpg), ("sa_1.json", json.dumps(good).encode())]
  jpg, meta = _pair(1)  # truncated JPEG data
  members += [("sa_2.jpg", jpg[: len(jpg) // 2]), ("sa_2.json", json.dumps(meta).encode())]
  jpg, meta = _pair(2)  # not an image at all
  members += [("sa_3.jpg", b"\x00garbage" * 50), ("sa_3.json", json.dumps(meta).encode())]
  jpg, meta = _pair(3)
  members += [("sa_4.jpg", jpg)]  # jpg without json
  jpg, meta = _pair(4)
  members += [("sa_5.json", json.dumps(meta).encode())]  # json without jpg
  jpg, meta = _pair(5)
  members += [("sa_6.jpg", jpg), ("sa_6.json", b'{"image": {"image_id": 6,')]
  # Annotation-level problems: the image stays, the bad annotations go.
  jpg, meta = _pair(6)
  anns = meta["annotations"]
  assert len(anns) >= 5
  anns[0]["segmentation"]["size"] = [65, 96]           # RLE size != image
  anns[1]["bbox"] = [-3.0, 2.0, 10.0, 10.0]            # negative box
  anns[2]["bbox"] = [90.0, 2.0, 10.0, 10.0]            # leaves the image
  anns[3]["segmentation"]["counts"] = anns[3]["segmentation"]["counts"][:-3]  # runs short
  kept_ids = [a["id"] for a in anns[4:]]
  members += [("sa_7.jpg", jpg), ("sa_7.json", json.dumps(meta).encode())]
  jpg, meta = _pair(7)  # JSON size disagrees with the JPEG
  meta["image"]["width"] = 100
  members += [("sa_8.jpg", jpg), ("sa_8.json", json.dumps(meta).encode())]
  jpg, meta = _pair(8)  # every annotation bad
  for a in meta["annotations"]:
    a["bbox"] = [0, 0, -1, 5]
  members += [("sa_9.jpg", jpg), ("sa_9.json", json.dumps(meta).encode())]
  with tarfile.open(os.path.join(d, "sa_000000.tar"), "w") as tf:
    for name, data in members:
      sample_data.add_member(tf, name, data)
  # A tar cut inside its second jpg.
  path = os.path.join(d, "sa_000001.tar")
  with tarfile.open(path, "w") as tf:
    for i in (10, 11):
      jpg, meta = _pair(i)
      sample_data.add_member(tf, f"sa_{i + 1}.jpg", jpg)
      sample_data.add_member(tf, f"sa_{i + 1}.json", json.dumps(meta).encode())
  with tarfile.open(path) as tf:
    cut = tf.getmember("sa_12.jpg").offset_data + 50
  with open(path, "r+b") as f:
    f.truncate(cut)
  return kept_ids


def test_bad_inputs_are_skipped_and_reported(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  kept_ids = _build_bad_inputs(str(src))
  out = str(tmp_path / "out")
  m = sa1b_to_tfrecord.convert([str(src)], out, num_shards=2, progress=False, log=lambda *_: None)
  by_member = {}
  for s in m["skipped"]:
    by_member.setdefault(s["member"], []).append(s["kind"])
  assert by_member["sa_2.jpg"] == ["corrupt_jpeg"]
  assert by_member["sa_3.jpg"] == ["corrupt_jpeg"]
  assert by_member["sa_4.jpg"] == ["missing_json"]
  assert by_member["sa_5.json"] == ["missing_jpg"]
  assert by_member["sa_6.json"] == ["invalid_json"]
  assert sorted(by_member["sa_7.json"]) == ["bad_bbox", "bad_bbox", "rle_invalid", "rle_size"]
  assert by_member["sa_8.jpg"] == ["size_mismatch"]
  assert by_member["sa_9.json"][-1] == "no_annotations"
  assert "truncated_member" in by_member["sa_12.jpg"]
  assert all(s["reason"] for s in m["skipped"])
  assert any("sa_000001.tar" in s["source"] for s in m["skipped"])
  # The good images made it, the image with bad annotations kept the rest.
  recs = {r["image/file_name"].decode(): r for r in _records(out)}
  assert sorted(recs) == ["sa_1.jpg", "sa_11.jpg", "sa_7.jpg"]
  assert recs["sa_7.jpg"]["mask/id"].tolist() == kept_ids
  assert m["num_records"] == 3
  assert m["skipped_counts"]["corrupt_jpeg"] == 2


def test_resume_after_interruption_gives_identical_shards(sample_dir, converted_dir, tmp_path):
  out = str(tmp_path / "out")
  quiet = {"progress": False, "log": lambda *_: None}
  # "Interrupted" run: shards 0 and 2 finished, shard 1 left half-written.
  assert sa1b_to_tfrecord.convert([sample_dir], out, 3, only_shards=[0, 2], **quiet) is None
  with open(os.path.join(out, dataset_layout.shard_name(1, 3) + ".tmp-12345"), "wb") as f:
    f.write(b"half a shard")
  with open(os.path.join(out, dataset_layout.shard_name(1, 3)), "wb") as f:
    f.write(b"torn, no done.json")
  before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)
            if n.endswith(".tfrecord")}
  m = sa1b_to_tfrecord.convert([sample_dir], out, 3, workers=2, **quiet)
  assert m is not None
  for name in (dataset_layout.shard_name(0, 3), dataset_layout.shard_name(2, 3)):  # not rewritten
    assert os.stat(os.path.join(out, name)).st_mtime_ns == before[name]
  ref = sorted(n for n in os.listdir(converted_dir))
  assert sorted(os.listdir(out)) == ref  # temp files cleaned up
  for n in ref:
    if n != "manifest.json":
      assert pathlib.Path(os.path.join(out, n)).read_bytes() == \
          pathlib.Path(os.path.join(converted_dir, n)).read_bytes(), n
  m_ref = dataset_layout.load_manifest(converted_dir)
  assert m["shards"] == m_ref["shards"] and m["num_masks"] == m_ref["num_masks"]


def test_changed_plan_needs_overwrite(sample_dir, tmp_path):
  out = str(tmp_path / "out")
  quiet = {"progress": False, "log": lambda *_: None}
  sa1b_to_tfrecord.convert([sample_dir], out, 2, **quiet)
  with pytest.raises(ValueError, match="--overwrite"):
    sa1b_to_tfrecord.convert([sample_dir], out, 3, **quiet)
  m = sa1b_to_tfrecord.convert([sample_dir], out, 3, overwrite=True, **quiet)
  assert m["num_shards"] == 3 and sorted(
      n for n in os.listdir(out) if n.endswith(".tfrecord")) == [
          dataset_layout.shard_name(i, 3) for i in range(3)]


def test_cli_make_sample_convert_inspect(tmp_path, capsys):
  import argparse
  parser = argparse.ArgumentParser()
  data_cli.register(parser.add_subparsers(dest="verb"))
  src, out = str(tmp_path / "src"), str(tmp_path / "out")

  def run(*argv):
    args = parser.parse_args(list(argv))
    return args.func(args)

  assert run("data", "make-sample", "--out", src, "--images", "3", "--per-tar", "2",
             "--height", "48", "--width", "64", "--objects", "2") == 0
  assert sorted(os.listdir(src)) == ["sa_000000.tar", "sa_000001.tar"]
  assert run("data", "convert", "--src", src, "--out", out, "--shards", "2",
             "--no-progress") == 0
  assert run("data", "inspect", out) == 0
  assert "3 images" in capsys.readouterr().out
  # inspect notices a damaged shard
  shard = os.path.join(out, dataset_layout.shard_name(1, 2))
  data = bytearray(pathlib.Path(shard).read_bytes())
  data[-10] ^= 1
  pathlib.Path(shard).write_bytes(bytes(data))
  assert run("data", "inspect", out) == 1
  assert "CRC" in capsys.readouterr().out


def test_jpeg_check_reads_whole_scan():
  buf = io.BytesIO()
  Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
  from data_pipelines import sa1b
  assert sa1b.check_jpeg(buf.getvalue(), 64, 48) is None
  assert "cannot decode" in sa1b.check_jpeg(buf.getvalue()[:-200], 64, 48)

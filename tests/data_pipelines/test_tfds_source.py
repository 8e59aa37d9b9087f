"""data.source = "tfds:segment_anything": a TFDS-prepared SA-1B through the samjax pipeline.

The TFDS dataset is written in the test by TFDS itself: the installed
``segment_anything`` builder (its feature spec, its ``_generate_examples``,
TFDS's writer, ``file_format="array_record"``) over SA-1B-layout tars from
``sample_data.make_sample``. Two things are stood in for, both outside the
data path: the download (``download_and_extract`` returns the extracted
tars, as TFDS's own builder tests do) and Apache Beam, which the builder
uses only to map its two per-file functions over the tars (a three-class
in-process stand-in below; TFDS then writes through its plain generator
path). The records and batches read back are compared with
``samjax data convert`` of the same tars.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import tarfile

import ml_collections
import numpy as np
import pytest

from data_pipelines import example_codec, pipeline, sa1b_to_tfrecord, sample_data, tfds_source
from data_pipelines.grain_source import ReadError, TFRecordSource
from samjax.configs import schema

SAMPLE = {"num_images": 6, "images_per_tar": 1, "height": 120, "width": 180,
          "num_objects": 4, "seed": 3}
NAME = "segment_anything"


class _PColl(list):
  """What the builder's ``beam.Create(...) | beam.FlatMap(f) | beam.Map(g)``
  computes, in process: a plain iterable of (key, example)."""

  def __or__(self, step):
    return _PColl(step(self))


class _FakeBeam:
  @staticmethod
  def Create(values):
    return _PColl(values)

  @staticmethod
  def FlatMap(fn):
    return lambda items: [y for x in items for y in fn(x)]

  @staticmethod
  def Map(fn):
    return lambda items: [fn(x) for x in items]


def _build_tfds(root: str, tars: list[str], monkeypatch, file_format="array_record") -> str:
  """Prepares ``segment_anything`` from ``tars`` with TFDS; returns its data_dir."""
  import tensorflow_datasets as tfds
  from etils import epath
  extracted = os.path.join(root, "extracted")
  manual = os.path.join(root, "manual")
  data_dir = os.path.join(root, "tfds")
  os.makedirs(manual)
  urls = {}
  for t in tars:
    name = os.path.basename(t)
    with tarfile.open(t) as tf:
      tf.extractall(os.path.join(extracted, name), filter="data")
    urls[name] = f"https://example.invalid/{name}"
  with open(os.path.join(manual, "segment_anything_links.txt"), "w") as f:
    f.write("file_name\tcdn_link\n")
    f.writelines(f"{n}\t{u}\n" for n, u in urls.items())

  def download_and_extract(self, url_or_urls):
    assert url_or_urls == urls
    return {n: epath.Path(extracted) / n for n in url_or_urls}

  # TFDS 4.9.10 imports the importlib_resources backport to locate the
  # builder's checksums file when preparing, but declares it only for
  # Python < 3.9; the standard library's importlib.resources is the same API.
  import importlib.resources.abc
  import importlib.util
  if importlib.util.find_spec("importlib_resources") is None:
    monkeypatch.setitem(sys.modules, "importlib_resources", importlib.resources)
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      download_and_extract)
  from tensorflow_datasets.core import lazy_imports_lib
  real_import = lazy_imports_lib._try_import
  monkeypatch.setattr(lazy_imports_lib, "_try_import",
                      lambda name: _FakeBeam if name == "apache_beam" else real_import(name))
  builder = tfds.builder(NAME, data_dir=data_dir)
  builder.download_and_prepare(
      file_format=file_format,
      download_config=tfds.download.DownloadConfig(manual_dir=manual,
                                                   try_download_gcs=False))
  return data_dir


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
  """(TFDS data_dir, samjax conversion of the same tars in TFDS's record order)."""
  root = str(tmp_path_factory.mktemp("tfds_sa1b"))
  tars = sample_data.make_sample(os.path.join(root, "sa1b"), **SAMPLE)
  with pytest.MonkeyPatch.context() as mp:
    data_dir = _build_tfds(root, tars, mp)
  src = tfds_source.TFDSSource(NAME, "train", data_dir)
  assert len(src) == SAMPLE["num_images"]
  # TFDS orders records by a hash of the image id; convert the tars in that
  # order (one image per tar) so that record i is the same image in both.
  ids = [example_codec.decode(src[i])["image/id"] for i in range(len(src))]
  assert sorted(ids) == list(range(1, len(src) + 1)) and ids != sorted(ids)
  conv = os.path.join(root, "converted")
  sa1b_to_tfrecord.convert([tars[i - 1] for i in ids], conv, num_shards=2, workers=1,
                           progress=False, log=lambda *_: None, copy=None)
  return data_dir, conv


def test_records_are_byte_identical_to_the_converter(datasets):
  data_dir, conv = datasets
  tf_src, ours = tfds_source.TFDSSource(NAME, "train", data_dir), TFRecordSource(conv)
  assert len(tf_src) == len(ours)
  for i in range(len(ours)):
    got, want = tf_src[i], ours[i]
    assert isinstance(got, bytes), got
    assert got == want
  # The example dicts the decode path works from are the same too.
  a, b = example_codec.decode(tf_src[0]), example_codec.decode(ours[0])
  assert a.keys() == b.keys()
  for k in a:
    assert type(a[k]) is type(b[k]) and np.array_equal(a[k], b[k]), k
  # The image bytes are the SA-1B JPEG, untouched.
  assert a["image/encoded"][:2] == b"\xff\xd8" and a["image/format"] == b"jpeg"
  # Pickles without its TFDS reader (grain workers) and reopens it lazily.
  clone = pickle.loads(pickle.dumps(tf_src))
  assert clone._ds is None and clone[3] == ours[3]


def _cfg(data_dir, **kw):
  base = {"batch_size": 2, "image_size": 64, "gt_size": 32, "max_masks": 8,
          "read_threads": 1, "seed": 7, "num_epochs": 2}
  base.update(kw)
  return pipeline.PipelineConfig(data_dir, **base)


def _assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("process", [(0, 1), (1, 2)])
def test_batches_equal_the_converted_pipeline(datasets, process):
  data_dir, conv = datasets
  index, count = process
  kw = {"process_index": index, "process_count": count}
  tf_cfg = _cfg(data_dir, source="tfds:segment_anything", split="train", **kw)
  ours = list(pipeline.make_iterator(_cfg(conv, **kw)))
  theirs = list(pipeline.make_iterator(tf_cfg))
  assert len(ours) == len(theirs) == 2 * (SAMPLE["num_images"] // count) // 2
  for a, b in zip(ours, theirs):
    _assert_same(a, b)
  # Sampling had something to do: more masks than K, masks dropped or kept.
  assert any(b["valid"].all(axis=1).any() for b in theirs)
  # Iterator state: restored mid-stream, the TFDS pipeline goes on identically.
  it = pipeline.make_iterator(tf_cfg)
  next(it)
  state = it.get_state()
  fresh = pipeline.make_iterator(tf_cfg)
  fresh.set_state(state)
  for b in ours[1:]:
    _assert_same(b, next(fresh))


def test_version_in_the_source_and_bad_records(datasets):
  data_dir, conv = datasets
  versioned = _cfg(data_dir, source="tfds:segment_anything:1.0.0", num_epochs=1,
                   shuffle=False)
  first = next(pipeline.make_iterator(versioned))
  _assert_same(first, next(pipeline.make_iterator(_cfg(conv, num_epochs=1, shuffle=False))))
  src = tfds_source.TFDSSource(NAME, "train[:2]", data_dir)
  assert len(src) == 2
  # The converter's checks: a malformed RLE or a box outside the image drops
  # that annotation; an image without a valid one is a bad record.
  ex = src._data()[1]
  ids = list(example_codec.decode(tfds_source.to_samjax_record(ex))["mask/id"])
  counts = ex["annotations"]["segmentation"]["counts"]
  counts[0] = counts[0][:-3] + (b"~~~" if isinstance(counts[0], bytes) else "~~~")
  ex["annotations"]["bbox"][2] = [0.5, 0.5, 1.0, 1.5]
  got = example_codec.decode(tfds_source.to_samjax_record(ex))
  assert list(got["mask/id"]) == ids[1:2] + ids[3:] and len(ids) > 3
  sizes = ex["annotations"]["segmentation"]["size"]
  ex["annotations"]["segmentation"]["size"] = [np.array([7, 7], np.uint64)] * len(sizes)
  with pytest.raises(ValueError, match="no valid annotations"):
    tfds_source.to_samjax_record(ex)
  # A record TFDS cannot give is a ReadError naming the shard, not a crash.
  src._ds = [None, None]
  bad = src[1]
  assert isinstance(bad, ReadError) and "array_record" in bad.where and bad.where.endswith("#1")


def test_unknown_source_is_a_config_error():
  c = schema.base_config()
  assert schema.check_data_source(c).kind == "samjax"
  c.data.source = "hf:sa1b"
  with pytest.raises(ValueError, match=r"unknown data.source 'hf:sa1b': expected .*tfds:NAME"):
    schema.check_data_source(c)
  for bad, why in (("tfds:", "not a TFDS dataset name"), ("tfds:Segment", "not a TFDS"),
                   ("tfds:segment_anything:1.0", "not X.Y.Z"), ("samjax2", "unknown")):
    c.data.source = bad
    with pytest.raises(ValueError, match=why):
      schema.check_data_source(c)
  with pytest.raises(ValueError, match="unknown data.source 'tfrecord'"):
    pipeline.make_map_dataset(_cfg("/nonexistent", source="tfrecord"))
  spec = tfds_source.parse_source("tfds:segment_anything:1.0.0")
  assert (spec.kind, spec.name, spec.version, spec.tfds_name) == (
      "tfds", NAME, "1.0.0", "segment_anything:1.0.0")
  # Fields of the other kind of source are refused rather than ignored.
  c = schema.base_config()
  c.data.source, c.data.train_dir = "tfds:segment_anything", "/data/sa1b"
  with pytest.raises(ValueError, match="data.train_dir set, but data.source is"):
    schema.check_data_source(c)
  c.data.train_dir, c.data.tfds_train_split = "", ""
  with pytest.raises(ValueError, match="tfds_train_split is empty"):
    schema.check_data_source(c)
  c = schema.base_config()
  c.data.tfds_data_dir = "/data/tfds"
  with pytest.raises(ValueError, match="data.tfds_data_dir set, but data.source is 'samjax'"):
    schema.check_data_source(c)
  assert isinstance(c, ml_collections.ConfigDict)


def test_tfrecord_preparation_is_refused_clearly(datasets, tmp_path):
  """TFDS writes TFRecord only with TensorFlow, so the TFRecord case is the
  same preparation with its dataset_info.json saying tfrecord."""
  import shutil
  data_dir, _ = datasets
  copy = str(tmp_path / "tfds")
  shutil.copytree(data_dir, copy)
  (info_path,) = [os.path.join(d, "dataset_info.json") for d, _, files in os.walk(copy)
                  if "dataset_info.json" in files]
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"
  info.pop("alternativeFileFormats", None)
  with open(info_path, "w") as f:
    json.dump(info, f)
  with pytest.raises(tfds_source.TFDSFormatError,
                     match=r"stored as tfrecord.*--file_format=array_record"):
    tfds_source.TFDSSource(NAME, "train", copy)
  with pytest.raises(tfds_source.TFDSFormatError, match="not prepared in"):
    tfds_source.TFDSSource(NAME, "train", str(tmp_path / "empty"))


def test_training_input_reads_the_configured_source(datasets):
  """samjax.train.input turns the config's source fields into PipelineConfigs."""
  import types

  from samjax.train import input as train_input
  data_dir, conv = datasets
  c = schema.base_config()
  c.data.train_dir, c.data.eval_dir = conv, ""
  assert train_input._location(c, held_out=False) == (conv, "train")
  assert train_input._location(c, held_out=True) is None
  c.data.train_dir = ""
  c.data.source, c.data.tfds_data_dir = "tfds:segment_anything", data_dir
  c.data.tfds_train_split, c.data.tfds_eval_split = "train[:4]", "train[4:]"
  assert train_input._location(c, held_out=False) == (data_dir, "train[:4]")
  where = train_input._location(c, held_out=True)
  assert where == (data_dir, "train[4:]")
  model = types.SimpleNamespace(config=types.SimpleNamespace(image_size=64, mask_input_size=32))
  cfg = train_input.pipeline_config(c, model, where[0], 2, seed=0, shuffle=False,
                                    num_epochs=1, max_masks=8, split=where[1])
  assert (cfg.source, cfg.data_dir, cfg.split) == ("tfds:segment_anything", data_dir, "train[4:]")
  (batch,) = list(pipeline.make_iterator(dataclasses.replace(cfg, read_threads=1)))
  # Records 4 and 5; mask sampling is seeded by position, so only the
  # per-image arrays match those of the whole dataset's last batch.
  want = list(pipeline.make_iterator(_cfg(conv, num_epochs=1, shuffle=False)))[2]
  for k in ("image", "image_id", "image_size", "original_size"):
    assert np.array_equal(batch[k], want[k]), k
  c.data.source = "tfds:nope:1"
  with pytest.raises(ValueError, match="not X.Y.Z"):
    train_input._location(c, held_out=False)

"""Shared fixtures: a tiny SA-1B-layout sample and its TFRecord conversion."""

from __future__ import annotations

import os

# 8 fake CPU devices for the global-array tests; must precede any jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest

from data_pipelines import sa1b_to_tfrecord, sample_data, train_copy

# Small images keep the whole data suite fast on 2 cores.
SAMPLE = {"num_images": 10, "images_per_tar": 4, "height": 120, "width": 180,
          "num_objects": 4, "seed": 3}


@pytest.fixture(scope="session")
def sample_settings():
  return dict(SAMPLE)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("sa1b_sample"))
  sample_data.make_sample(d, **SAMPLE)
  return d


# Training-resolution copies sized for the tests' pipeline (S = 64, G = 32).
TEST_COPY = train_copy.TrainCopyConfig(image_size=64, gt_size=32, quality=95)


@pytest.fixture(scope="session")
def copy_config():
  return TEST_COPY


def converted_fixture(name: str, copy: train_copy.TrainCopyConfig | None, doc: str):
  """Session fixture ``name``: the sample converted into 3 shards, ``copy``
  being the training copies stored with it (``sa1b_to_tfrecord.convert``)."""

  def fixture(sample_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp(name))
    sa1b_to_tfrecord.convert([sample_dir], out, num_shards=3, workers=1, progress=False,
                             log=lambda *_: None, copy=copy)
    return out

  fixture.__doc__ = doc
  return pytest.fixture(scope="session", name=name)(fixture)


converted_dir = converted_fixture(
    "converted_dir", train_copy.DEFAULT, "Converted with the converter's default copies.")
converted_copy_dir = converted_fixture(
    "converted_copy_dir", TEST_COPY,
    "Converted with copies the tests' pipeline config (S 64, G 32) will use.")
converted_plain_dir = converted_fixture(
    "converted_plain_dir", None, "Converted without any training copies (originals only).")

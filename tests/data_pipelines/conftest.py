"""Shared fixtures: a tiny SA-1B-layout sample and its TFRecord conversion."""

from __future__ import annotations

import os

# 8 fake CPU devices for the global-array tests; must precede any jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest

from data_pipelines import convert, sample_data, train_copy

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


@pytest.fixture(scope="session")
def converted_dir(sample_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("sa1b_tfrecord"))
  convert.convert([sample_dir], out, num_shards=3, workers=1, progress=False,
                  log=lambda *_: None)
  return out


# Training-resolution copies sized for the tests' pipeline (S = 64, G = 32).
TEST_COPY = train_copy.TrainCopyConfig(image_size=64, gt_size=32, quality=95)


@pytest.fixture(scope="session")
def copy_config():
  return TEST_COPY


@pytest.fixture(scope="session")
def converted_copy_dir(sample_dir, tmp_path_factory):
  """Converted with copies the tests' pipeline config (S 64, G 32) will use."""
  out = str(tmp_path_factory.mktemp("sa1b_tfrecord_copy"))
  convert.convert([sample_dir], out, num_shards=3, workers=1, progress=False,
                  log=lambda *_: None, copy=TEST_COPY)
  return out


@pytest.fixture(scope="session")
def converted_plain_dir(sample_dir, tmp_path_factory):
  """Converted without any training copies (originals only)."""
  out = str(tmp_path_factory.mktemp("sa1b_tfrecord_plain"))
  convert.convert([sample_dir], out, num_shards=3, workers=1, progress=False,
                  log=lambda *_: None, copy=None)
  return out

"""Evaluation fixtures: the tiny self-made evaluation set."""

import pytest

from samjax.evaluation.sample_sets import make_eval_set


@pytest.fixture(scope="session")
def eval_set(tmp_path_factory):
  """Paths of ``make_eval_set``: annotations, images, detections, sa1b."""
  return make_eval_set(str(tmp_path_factory.mktemp("eval_set")))


@pytest.fixture
def dataset(eval_set):
  from samjax.evaluation.coco_gt import load_dataset
  return load_dataset(eval_set["annotations"], eval_set["images"])


@pytest.fixture(scope="module")
def torch_single_thread():
  """The official model on one CPU thread for a test module: its tiny decodes
  are 10-30x slower with two threads on a busy two-core machine (the
  threads wait on each other), and the numbers do not change."""
  import torch
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)

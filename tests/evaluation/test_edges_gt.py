"""BSDS ground truth: the .mat layout and PNG edge maps agree; bad files get clear errors."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from samjax.evaluation.edges_gt import (
  ground_truth_files,
  read_bsds_mat,
  read_ground_truth,
  read_png_edges,
  write_bsds_mat,
)
from samjax.evaluation.edges_sample import make_bsds_sample, segment_boundaries


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  root = tmp_path_factory.mktemp("bsds")
  return root, make_bsds_sample(str(root))


def test_mat_and_png_ground_truth_agree(sample):
  root, ids = sample
  mats = ground_truth_files(str(root / "groundTruth"), ids)
  pngs = ground_truth_files(str(root / "groundTruth_png"), ids)
  for i in ids:
    from_mat, from_png = read_ground_truth(mats[i]), read_ground_truth(pngs[i])
    assert len(from_mat) == len(from_png) == 3
    for a, b in zip(from_mat, from_png):
      assert a.dtype == bool and a.shape == (64, 96) and a.any()
      np.testing.assert_array_equal(a, b)
    # Annotators disagree (each outlines one shape fewer).
    assert from_mat[0].sum() > from_mat[2].sum()


def test_mat_file_has_the_bsds500_layout(sample):
  root, ids = sample
  data = loadmat(str(root / "groundTruth" / f"{ids[0]}.mat"))
  cells = data["groundTruth"]
  assert cells.shape == (1, 3) and cells.dtype == object
  assert set(cells[0, 0].dtype.names) == {"Segmentation", "Boundaries"}
  seg = cells[0, 0]["Segmentation"][0, 0]
  np.testing.assert_array_equal(cells[0, 0]["Boundaries"][0, 0] != 0,
                                segment_boundaries(seg))


def test_png_annotators_sort_by_number_and_single_png(tmp_path):
  lines = [np.zeros((5, 6), bool) for _ in range(3)]
  for k, m in enumerate(lines):
    m[k, :] = True
  for k in (10, 2, 1):  # numeric, not lexical, order
    Image.fromarray(lines[{1: 0, 2: 1, 10: 2}[k]].astype(np.uint8) * 255).save(
        tmp_path / f"a_{k}.png")
  Image.fromarray(lines[0].astype(np.uint8)).save(tmp_path / "b.png")  # 0/1 values
  Image.fromarray(lines[1].astype(np.uint8)).save(tmp_path / "b_1.png")  # an image of its own
  files = ground_truth_files(str(tmp_path), ["a", "b", "b_1"])
  assert [p.rsplit("/", 1)[1] for p in files["a"]] == ["a_1.png", "a_2.png", "a_10.png"]
  assert [p.rsplit("/", 1)[1] for p in files["b"]] == ["b.png"]
  for got, want in zip(read_png_edges(files["a"]), lines):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(read_ground_truth(files["b"])[0], lines[0])


def test_missing_ambiguous_and_unreadable_ground_truth(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such folder"):
    ground_truth_files(str(tmp_path / "nope"), ["1"])
  write_bsds_mat(str(tmp_path / "1.mat"), [np.eye(4, dtype=bool)])
  with pytest.raises(FileNotFoundError, match=r"1 of 2 image\(s\), e.g. \['2'\]"):
    ground_truth_files(str(tmp_path), ["1", "2"])
  Image.fromarray(np.eye(4, dtype=np.uint8)).save(tmp_path / "1.png")
  with pytest.raises(ValueError, match="both .mat and PNG"):
    ground_truth_files(str(tmp_path), ["1"])
  (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
  with pytest.raises(ValueError, match="junk.mat: not a readable .mat"):
    read_bsds_mat(str(tmp_path / "junk.mat"))
  savemat(str(tmp_path / "other.mat"), {"edges": np.eye(3)})
  with pytest.raises(ValueError, match="no 'groundTruth' variable"):
    read_bsds_mat(str(tmp_path / "other.mat"))
  (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
  with pytest.raises(ValueError, match="bad.png: not a readable image"):
    read_png_edges([str(tmp_path / "bad.png")])
  with pytest.raises(FileNotFoundError, match="gone.png"):
    read_png_edges([str(tmp_path / "gone.png")])

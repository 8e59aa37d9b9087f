"""Reading the ground truth: COCO polygons / RLE, LVIS image names, SA-1B folders."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from samjax.evaluation.coco_gt import load_dataset


def test_sample_set_has_every_mask_format_and_size(dataset):
  kinds = set()
  areas = []
  for image_id in dataset.image_ids():
    assert dataset.load_image(image_id).shape == (128, 128, 3)
    for a in dataset.instances(image_id):
      seg = a["segmentation"]
      kinds.add("polygon" if isinstance(seg, list) else type(seg["counts"]).__name__)
      m = dataset.mask(a)
      assert m.dtype == bool and m.shape == (128, 128) and m.sum() == a["area"]
      areas.append(a["area"])
  assert kinds == {"polygon", "str", "list"}  # polygons, compressed and uncompressed RLE
  assert min(areas) < 32 ** 2 and any(32 ** 2 <= x < 96 ** 2 for x in areas) \
      and max(areas) >= 96 ** 2


def test_lvis_style_images_are_found_by_their_coco_url(eval_set, tmp_path):
  root = tmp_path / "coco"
  (root / "val2017").mkdir(parents=True)
  with open(eval_set["annotations"]) as f:
    data = json.load(f)
  for img in data["images"]:
    name = img.pop("file_name")
    img["coco_url"] = f"http://images.cocodataset.org/val2017/{name}"
    shutil.copy(os.path.join(eval_set["images"], name), root / "val2017" / name)
  for a in data["annotations"]:
    del a["iscrowd"]  # LVIS has none
  path = tmp_path / "lvis.json"
  path.write_text(json.dumps(data))
  for images in (root, root / "val2017"):  # the COCO root or the split's folder
    ds = load_dataset(str(path), str(images))
    assert ds.load_image(10).shape == (128, 128, 3)
    assert len(ds.instances(10)) == 4
  assert load_dataset(str(path), str(root)).frequencies == {1: "f", 2: "c", 3: "r"}


def test_crowd_regions_are_left_out_of_the_instances(eval_set, tmp_path):
  with open(eval_set["annotations"]) as f:
    data = json.load(f)
  data["annotations"][0]["iscrowd"] = 1
  path = tmp_path / "crowd.json"
  path.write_text(json.dumps(data))
  ds = load_dataset(str(path), eval_set["images"])
  assert [a["id"] for a in ds.instances(10)] == [2, 3, 4]
  assert len(ds.instances(10, include_crowd=True)) == 4


def test_sa1b_folder(eval_set):
  ds = load_dataset(eval_set["sa1b"])
  assert ds.image_ids() == [1, 2] and ds.images_dir == eval_set["sa1b"]
  anns = ds.instances(1)
  assert anns and {a["category_id"] for a in anns} == {1}
  assert ds.load_image(1).shape == (64, 96, 3)
  assert all(ds.mask(a).sum() == a["area"] for a in anns)


def test_errors_name_the_problem(eval_set, tmp_path):
  with pytest.raises(FileNotFoundError, match="--annotations"):
    load_dataset(str(tmp_path / "nope.json"), eval_set["images"])
  with pytest.raises(FileNotFoundError, match="--images"):
    load_dataset(eval_set["annotations"], str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="--images is required"):
    load_dataset(eval_set["annotations"])
  bad = tmp_path / "bad.json"
  bad.write_text('{"images": []}')
  with pytest.raises(ValueError, match="not a COCO instance file"):
    load_dataset(str(bad), eval_set["images"])
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    load_dataset(str(bad), eval_set["images"])
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="not found under --images"):
    load_dataset(eval_set["annotations"], str(tmp_path / "empty")).load_image(10)
  # An image of another size than annotated: the wrong folder.
  other = tmp_path / "other"
  other.mkdir()
  for name in os.listdir(eval_set["images"]):
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(other / name)
  with pytest.raises(ValueError, match="60x50 pixels, the annotations say 128x128"):
    load_dataset(eval_set["annotations"], str(other)).load_image(10)


def test_exif_rotated_files_are_read_in_the_annotated_frame(tmp_path):
  # Stored 60 wide x 40 high with "rotate 90" in EXIF: viewers show it 40 x 60,
  # the annotations (made on stored pixels, as COCO's) say 60 x 40.
  stored = np.zeros((40, 60, 3), np.uint8)
  stored[:, :10] = 255
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(stored).save(tmp_path / "a.jpg", exif=exif, quality=100)
  ann = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
         "annotations": [], "categories": []}
  (tmp_path / "a.json").write_text(json.dumps(ann))
  image = load_dataset(str(tmp_path / "a.json"), str(tmp_path)).load_image(1)
  assert image.shape == (40, 60, 3) and image[:, :8].mean() > 200 and image[:, 12:].mean() < 40

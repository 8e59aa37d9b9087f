"""Ground truth of an evaluation: COCO-format instances or SA-1B-layout folders.

Two inputs, one in-memory form (a pycocotools ``COCO`` object):

- a COCO instance JSON (``images``, ``annotations``, ``categories``), masks
  as polygons, compressed or uncompressed RLE; LVIS v1 JSONs too (images
  named by ``coco_url`` only, annotations without ``iscrowd``, categories
  with a ``frequency``);
- an SA-1B-layout folder: ``<stem>.jpg`` + ``<stem>.json`` per image, the
  JSON ``{"image": {image_id, width, height, file_name}, "annotations":
  [{id, segmentation: RLE, bbox, area, ...}]}``; every mask becomes an
  instance of one category, ``object`` (id 1), ``iscrowd`` 0.

Image files are looked up under ``images_dir`` by the image's ``file_name``
(as a relative path, then its base name), then by the last two parts of its
``coco_url`` (``val2017/000000397133.jpg``, the layout of a COCO root) and
the URL's base name, so LVIS works with ``--images`` at the COCO root or at
one split's folder.

Annotations and images may be local, ``gs://`` or ``s3://``
(``data_pipelines.storage``).

Masks are in the annotations' pixel frame: an image whose EXIF orientation
would change its size is read as stored when that matches the annotated
size (COCO's annotations were made on stored pixels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np

from data_pipelines import storage
from data_pipelines.coco import check_coco, find_image, image_names, read_json

SA1B_CATEGORY = {"id": 1, "name": "object"}


@contextlib.contextmanager
def quiet():
  """Silences pycocotools' progress prints (they go to stdout)."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


def coco_from_dict(data: dict):
  """A pycocotools ``COCO`` indexed from an in-memory dataset dict."""
  from pycocotools.coco import COCO
  coco = COCO()
  coco.dataset = data
  with quiet():
    coco.createIndex()
  return coco


@dataclasses.dataclass
class EvalDataset:
  """Images + instance annotations of one evaluation.

  Attributes:
    coco: the pycocotools index of the ground truth.
    images_dir: where image files are looked up.
    source: the ``--annotations`` path it came from.
  """
  coco: object
  images_dir: str
  source: str

  def image_ids(self, limit: int | None = None) -> list[int]:
    """Image ids in file order; the first ``limit`` if given."""
    ids = [img["id"] for img in self.coco.dataset["images"]]
    return ids if limit is None else ids[:limit]

  def image_info(self, image_id) -> dict:
    return self.coco.imgs[image_id]

  def instances(self, image_id, include_crowd: bool = False) -> list[dict]:
    """The image's annotations (crowd regions left out unless asked for)."""
    anns = self.coco.imgToAnns.get(image_id, [])
    return [a for a in anns if include_crowd or not a.get("iscrowd", 0)]

  def mask(self, ann: dict) -> np.ndarray:
    """[H, W] bool mask of an annotation (polygons rasterised by pycocotools)."""
    return self.coco.annToMask(ann).astype(bool)

  @property
  def frequencies(self) -> dict[int, str]:
    """category id -> LVIS frequency ('r', 'c', 'f'); empty without them."""
    return {c["id"]: c["frequency"] for c in self.coco.dataset.get("categories", [])
            if "frequency" in c}

  def image_path(self, image_id) -> str:
    info = self.image_info(image_id)
    path, tried = find_image(self.images_dir, info)
    if path is not None:
      return path
    if not image_names(info):
      raise ValueError(f"{self.source}: image {image_id} has neither file_name nor coco_url")
    raise FileNotFoundError(f"image {image_id}: not found under --images "
                            f"{self.images_dir} (tried {', '.join(tried)})")

  def load_image(self, image_id) -> np.ndarray:
    """[H, W, 3] uint8 RGB in the annotations' frame."""
    from samjax.inference.image_io import decode_image_file
    path = self.image_path(image_id)
    decoded = decode_image_file(path)
    info = self.image_info(image_id)
    want = (info.get("height"), info.get("width"))
    got = decoded.rgb.shape[:2]
    if None in want or got == want:
      return decoded.rgb
    if decoded.rotated:
      stored = _read_stored(path)
      if stored.shape[:2] == want:
        return stored
    raise ValueError(f"{path} is {got[1]}x{got[0]} pixels, the annotations say "
                     f"{want[1]}x{want[0]}: wrong --images folder?")


def _read_stored(path: str) -> np.ndarray:
  """Pixels as stored, without applying the EXIF orientation."""
  from PIL import Image

  from samjax.inference.image_io import image_source, to_rgb
  with Image.open(image_source(path)) as im:
    im.load()
    return to_rgb(im)


def load_dataset(annotations: str, images: str | None = None) -> EvalDataset:
  """Reads a COCO instance JSON or an SA-1B-layout folder.

  Args:
    annotations: the JSON file, or the folder of per-image JSONs.
    images: the image folder (default for SA-1B: ``annotations`` itself).
  Raises:
    FileNotFoundError: a path does not exist.
    ValueError: the annotations are not in either format.
  """
  if not storage.exists(annotations):
    raise FileNotFoundError(f"--annotations: no such file or directory: {annotations}")
  if storage.isdir(annotations):
    data = _sa1b_folder(annotations)
    images = images or annotations
  else:
    data = read_json(annotations, "--annotations")
    _check_coco(data, annotations)
    if images is None:
      raise ValueError("--images is required with a COCO annotation file")
  if not storage.isdir(images):
    raise FileNotFoundError(f"--images: no such directory: {images}")
  data.setdefault("categories", [])
  return EvalDataset(coco_from_dict(data), images, annotations)


def _check_coco(data, path: str) -> None:
  check_coco(data, f"--annotations {path}")


def _sa1b_folder(folder: str) -> dict:
  """SA-1B-layout per-image JSONs -> one COCO dataset dict."""
  names = [n for n in storage.listdir(folder) if n.endswith(".json")]
  if not names:
    raise ValueError(f"--annotations {folder}: a folder, but without SA-1B-style "
                     "<stem>.json files")
  images, anns = [], []
  for name in names:
    path = storage.join(folder, name)
    doc = read_json(path, "SA-1B annotation")
    image = doc.get("image") if isinstance(doc, dict) else None
    if not isinstance(image, dict) or "image_id" not in image:
      raise ValueError(f"{path}: no 'image' record with an image_id")
    image_id = image["image_id"]
    images.append({"id": image_id, "width": image["width"], "height": image["height"],
                   "file_name": image.get("file_name", name[:-5] + ".jpg")})
    for a in doc.get("annotations", []):
      anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                   "segmentation": a["segmentation"], "bbox": a["bbox"],
                   "area": a["area"], "iscrowd": 0})
  return {"images": images, "annotations": anns, "categories": [dict(SA1B_CATEGORY)]}

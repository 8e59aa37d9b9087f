"""SA-1B records on disk, as `samjax amg` and `samjax annotate` write them:
one JSON per image (``image`` + ``annotations`` with COCO RLE), beside the
JPEG the converter pairs with it; how a finished record and a complete image
copy are recognised (resuming, refusing foreign files)."""

from __future__ import annotations

import json
import re
import zlib

from data_pipelines import atomic_io, storage

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Inputs --copy-images puts beside their JSON (the converter reads JPEGs).
COPY_EXTS = (".jpg", ".jpeg")
# Keys of a finished JSON (``sa1b_record``); resuming checks them.
IMAGE_KEYS = ("image_id", "width", "height", "file_name")
ANNOTATION_KEYS = ("id", "segmentation", "bbox", "area", "predicted_iou",
                   "stability_score", "crop_box", "point_coords")


def image_id(file_name: str) -> int:
  """N for ``sa_N.*`` (SA-1B names), else a stable CRC32 of the file name."""
  m = re.fullmatch(r"sa_(\d+)", storage.splitext(file_name)[0])
  return int(m.group(1)) if m else zlib.crc32(file_name.encode("utf-8"))


def sa1b_record(records: list[dict], file_name: str, height: int, width: int) -> dict:
  """Generator records (output_mode='coco_rle') -> one SA-1B JSON document."""
  return {
      "image": {"image_id": image_id(file_name), "width": width, "height": height,
                "file_name": file_name},
      "annotations": [dict(id=i, segmentation=r["segmentation"], bbox=r["bbox"],
                           area=r["area"], predicted_iou=r["predicted_iou"],
                           stability_score=r["stability_score"], crop_box=r["crop_box"],
                           point_coords=r["point_coords"]) for i, r in enumerate(records)],
  }


def record_problem(path: str, file_name: str | None = None
                   ) -> tuple[dict | None, str | None]:
  """(document, None) if ``path`` is a finished record of ``file_name``
  (None: of whichever image it names, for a scan of a folder of records),
  else (None, why not); why is None when there is no JSON at all.

  Finished means: it parses and has the schema ``sa1b_record`` writes. A
  JSON cut short or emptied (by a crash of an older version, a full disk, a
  copy tool) fails this and its image is redone.
  """
  try:
    doc = json.loads(storage.read_bytes(path))
  except FileNotFoundError:
    return None, None
  except (OSError, ValueError) as e:  # ValueError: JSON and UTF-8 decoding
    return None, f"{storage.basename(path)} is unreadable ({type(e).__name__}: {e})"
  name = storage.basename(path)
  image = doc.get("image") if isinstance(doc, dict) else None
  if not isinstance(image, dict) or not all(k in image for k in IMAGE_KEYS):
    return None, f"{name} has no complete 'image' record"
  if file_name is not None and image["file_name"] != file_name:
    return None, f"{name} describes {image['file_name']!r}, not {file_name!r}"
  anns = doc.get("annotations")
  if not isinstance(anns, list) or not all(
      isinstance(a, dict) and all(k in a for k in ANNOTATION_KEYS) for a in anns):
    return None, f"{name} has incomplete 'annotations'"
  return doc, None


def copy_problem(dst: str, src: str, width: int, height: int) -> str | None:
  """Why the image copy ``dst`` of ``src`` is not complete (None: it is).

  Complete: a JPEG of the JSON's width x height, stored upright, that is
  either a byte-for-byte-sized copy of ``src`` or decodes to the end (a
  re-encoded copy, see ``write_copy``).
  """
  from PIL import Image

  from samjax.inference.image_io import image_source
  name = storage.basename(dst)
  try:
    size = storage.getsize(dst)
    with Image.open(image_source(dst)) as im:
      if im.format != "JPEG" or im.size != (width, height):
        return (f"{name} is a {im.format} of {im.size[0]}x{im.size[1]}, the JSON "
                f"says a JPEG of {width}x{height}")
      if im.getexif().get(0x0112) not in (None, 1):
        return f"{name} is stored rotated (EXIF orientation)"
      if size == storage.getsize(src):
        return None
      im.load()  # a truncated file fails here
  except FileNotFoundError:
    return f"{name} is missing"
  except Exception as e:  # PIL raises OSError, SyntaxError, ...
    return f"{name} is damaged ({type(e).__name__}: {e})"
  return None


def write_copy(src: str, dst: str, decoded) -> None:
  """Atomically puts the JPEG the converter will pair with the JSON at ``dst``.

  A JPEG stored upright is copied byte for byte. One with an EXIF rotation
  (or a non-JPEG under a .jpg name) is re-encoded upright at quality 95,
  because the JSON's masks and size are in the upright frame and
  ``samjax data convert`` reads the pixels as stored.
  """
  if decoded.format == "JPEG" and not decoded.rotated:
    atomic_io.copy_file(src, dst)
    return
  from PIL import Image
  with atomic_io.atomic_writer(dst) as f:
    Image.fromarray(decoded.rgb).save(f, format="JPEG", quality=95)

"""COCO-format instance datasets -> the records ``samjax data convert`` writes.

``samjax data convert --coco instances.json --images DIR`` turns a COCO
instance JSON (``images``, ``annotations``, ``categories``; masks as
polygons, uncompressed or compressed RLE) plus its image folder into the same
validated TFRecords as SA-1B (``sa1b_to_tfrecord``): one record per image,
every kept annotation a compressed COCO RLE mask with SA-1B's fields.

``scan`` reads the JSON once (in the converting process) and makes one
``Item`` per image holding its annotations; ``load`` (in the shard writers)
reads the image and rasterises the annotations. As in ``sa1b``, nothing
raises on bad data: every problem becomes a ``sa1b.Skip`` (the manifest's
``skipped`` entries, ``source`` = the JSON, ``member`` = the image's
``file_name``). Only a file that is not a COCO instance JSON at all is an
error (``ValueError``).

What each annotation becomes (SA-1B's fields):

* ``segmentation``: the mask as compressed RLE at the image size. Polygons
  are rasterised exactly as pycocotools' ``COCO.annToMask`` does
  (``frPyObjects`` of all parts at (h, w), then ``merge``), uncompressed RLE
  goes through ``frPyObjects``, compressed RLE is kept as it is.
* ``area`` and ``bbox``: of the mask (pixel count, pycocotools ``toBbox``),
  not the JSON's values (a polygon's area and box are not its mask's).
* ``point_coords``: one point, the mask pixel farthest from the mask's
  boundary (exact Euclidean distance transform, the image border counting as
  boundary, the first such pixel in row-major order), as integer (x, y)
  pixel indices: where the point-prompt evaluation's first click goes
  (``samjax/evaluation/clicker.py``), always inside the mask, also for
  rings and other non-convex shapes.
* ``predicted_iou`` and ``stability_score``: 1.0 (human ground truth, not a
  model's guess; the training pipeline reads neither). ``crop_box``: the
  whole image. ``id``: the COCO annotation id (unique, so a mask's category
  can be looked up in the JSON); ``category_id`` / ``iscrowd`` stay on the
  dict but the record has no field for them: the manifest lists the
  categories and the masks kept per category.

Images: a JPEG whose stored pixels have the annotated size is stored byte
for byte. Anything else the training pipeline could not read as stored is
re-encoded once as JPEG (quality 95, 4:4:4), listed in the manifest:
non-JPEG files (PNG, ...: decoded to RGB by ``data_pipelines.pixels`` as
``samjax segment`` decodes them, transparency over white) and files whose
EXIF orientation gives the annotated size (stored upright, the frame
``samjax eval`` reads them in, ``samjax/evaluation/coco_gt.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import posixpath

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import pixels, rle, storage
from data_pipelines.sa1b import Skip, check_jpeg, store_failure

# Skip kinds of COCO inputs (manifest ``skipped_counts`` keys), next to
# ``sa1b.KINDS``' "missing_key", "size_mismatch", "rle_size", "rle_invalid"
# and "no_annotations", which mean the same here.
KINDS = ("missing_key", "duplicate_image", "duplicate_id", "unknown_image", "bad_category",
         "crowd", "bad_segmentation", "degenerate_polygon", "rle_size", "rle_invalid",
         "empty_mask", "missing_image", "corrupt_image", "size_mismatch", "no_annotations")

REENCODE_QUALITY = 95
POINT_RULE = ("mask pixel farthest from the mask boundary (Euclidean distance transform, "
              "image border = boundary, first in row-major order), integer (x, y)")
_EXIF_ORIENTATION = 0x0112
_INT64 = (-(2**63), 2**63)


# --- shared with samjax/evaluation/coco_gt.py ---------------------------------------------

def read_json(path: str, what: str):
  """Parsed JSON of ``path``; ValueError naming ``what`` and the file when invalid."""
  try:
    return json.loads(storage.read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{what} {path} is not valid JSON ({e})") from e


def check_coco(data, label: str) -> None:
  """ValueError (``label``: why) unless ``data`` looks like a COCO instance file:
  ``images`` and ``annotations`` lists, annotations with id, image_id and
  segmentation (the first one is checked; others are checked one by one
  where they are used)."""
  if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
      or not isinstance(data.get("annotations"), list):
    raise ValueError(f"{label}: not a COCO instance file (needs 'images' "
                     "and 'annotations' lists)")
  for ann in data["annotations"][:1]:
    missing = [k for k in ("id", "image_id", "segmentation")
               if not isinstance(ann, dict) or k not in ann]
    if missing:
      raise ValueError(f"{label}: annotations lack {missing}")


def image_names(info: dict) -> list[str]:
  """Relative paths an image record's file may have under the image folder, in
  the order tried: ``file_name``, its base name, the last two parts of
  ``coco_url`` (``val2017/x.jpg``, a COCO root's layout) and its base name."""
  names = []
  if isinstance(info.get("file_name"), str) and info["file_name"]:
    names += [info["file_name"], posixpath.basename(info["file_name"])]
  if isinstance(info.get("coco_url"), str) and info["coco_url"]:
    parts = info["coco_url"].rstrip("/").split("/")
    names += ["/".join(parts[-2:]), parts[-1]]
  return list(dict.fromkeys(names))


def find_image(images_dir: str, info: dict) -> tuple[str | None, list[str]]:
  """(path of the image's file or None, the paths tried) (``image_names``);
  ``images_dir`` local or on a bucket."""
  tried = []
  for name in image_names(info):
    path = storage.join(images_dir, name)
    if storage.isfile(path):
      return path, tried
    tried.append(path)
  return None, tried


# --- scanning the JSON ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Input:
  """What the user converts: ``--coco`` JSON, ``--images`` folder, crowd policy."""
  annotations: str
  images: str
  keep_crowd: bool = False


@dataclasses.dataclass(frozen=True)
class Item:
  """One COCO image and the annotations to rasterise for it."""
  key: str       # str(image id)
  source: str    # the annotation JSON
  images: str    # the image folder
  image: dict    # the COCO image record
  anns: tuple    # its annotation dicts that passed the JSON-level checks
  digest: str    # of the above (and the settings): a changed JSON rewrites the shard

  is_tar = False

  @property
  def member(self) -> str:
    return _member(self.image)

  @property
  def ref(self) -> list:
    """The item's entry in the converter's plan (and shard digests)."""
    return [self.source, self.key, self.digest]


def _member(info: dict) -> str:
  names = image_names(info)
  return names[0] if names else f"image {info.get('id')}"


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _check_image(img) -> str | None:
  if not isinstance(img, dict):
    return "image record is not an object"
  if not _is_int(img.get("id")) or not _INT64[0] <= img["id"] < _INT64[1]:
    return f"image id {img.get('id')!r} missing or not a 64-bit integer"
  for key in ("width", "height"):
    if not _is_int(img.get(key)) or img[key] < 1:
      return f"image {key} {img.get(key)!r} missing or not a positive integer"
  if not image_names(img):
    return "image has neither file_name nor coco_url"
  return None


def scan(inp: Input) -> tuple[list[Item], list[Skip], dict]:
  """Reads ``inp.annotations``; returns (items in the JSON's image order, skips,
  {"categories": the JSON's categories}).

  Checked here (cheap, per record): image records (id, width, height, a file
  name), duplicate image / annotation ids, annotations of unknown images,
  category ids outside ``categories`` (when it lists any), crowd regions
  (unless ``keep_crowd``). An image left without annotations is skipped.

  Raises:
    FileNotFoundError: the JSON or the image folder does not exist.
    ValueError: the file is not JSON, or not a COCO instance file.
  """
  src = inp.annotations
  if not storage.isfile(src):
    raise FileNotFoundError(f"--coco: no such file: {src}")
  if not storage.isdir(inp.images):
    raise FileNotFoundError(f"--images: no such directory: {inp.images}")
  data = read_json(src, "--coco")
  check_coco(data, f"--coco {src}")
  cats = data.get("categories")
  cats = [c for c in cats if isinstance(c, dict)] if isinstance(cats, list) else []
  images, bad_ids, skips = _scan_images(data["images"], src)
  per_image, counts, ann_skips = _scan_annotations(
      data["annotations"], src, images, bad_ids, {c.get("id") for c in cats},
      inp.keep_crowd)
  items, item_skips = _make_items(inp, images, per_image, counts)
  return items, skips + ann_skips + item_skips, {"categories": cats}


def _scan_images(records: list, src: str) -> tuple[dict[int, dict], set[int], list[Skip]]:
  """The usable image records of the JSON by id (the first of a repeated id),
  the ids of unusable ones (to drop their annotations), and the skips."""
  skips: list[Skip] = []
  images: dict[int, dict] = {}
  bad_ids: set[int] = set()  # ids of unusable image records
  for i, img in enumerate(records):
    why = _check_image(img)
    if why is None and img["id"] in images:
      skips.append(Skip("duplicate_image", src, _member(img),
                        f"image id {img['id']} appears again (record #{i}); "
                        "the first record is used"))
      continue
    if why is not None:
      member = _member(img) if isinstance(img, dict) else f"images[{i}]"
      skips.append(Skip("missing_key", src, member, f"images[{i}]: {why}"))
      if isinstance(img, dict) and _is_int(img.get("id")):
        bad_ids.add(img["id"])
      continue
    images[img["id"]] = img
  return images, bad_ids, skips


def _scan_annotations(records: list, src: str, images: dict[int, dict], bad_ids: set[int],
                      cat_ids: set, keep_crowd: bool
                      ) -> tuple[dict[int, list], dict[int, int], list[Skip]]:
  """Sorts the JSON's annotations to their images.

  Returns (the kept annotations per image id, the number of annotations
  naming each image, the skips). Annotations of an unusable image record
  (``bad_ids``, and no usable record of that id) are dropped with one skip
  per such image, after the others.
  """
  dropped = dict.fromkeys(bad_ids - set(images), 0)
  per_image: dict[int, list] = {k: [] for k in images}
  counts: dict[int, int] = dict.fromkeys(images, 0)
  seen: set[int] = set()
  skips: list[Skip] = []
  for i, a in enumerate(records):
    aid = a.get("id") if isinstance(a, dict) else None
    label = f"annotation {aid}" if _is_int(aid) else f"annotations[{i}]"
    raw_id = a.get("image_id") if isinstance(a, dict) else None
    img_id = raw_id if _is_int(raw_id) else None
    if img_id in dropped:
      dropped[img_id] += 1
      continue
    img = images.get(img_id)
    member = _member(img) if img is not None else ""
    if img is not None:
      counts[img_id] += 1
    problem = _annotation_problem(a, aid, raw_id, img, seen, cat_ids, keep_crowd)
    if problem is not None:
      kind, reason = problem
      skips.append(Skip(kind, src, member, f"{label}: {reason}"))
    else:
      per_image[img_id].append(a)
    if _is_int(aid):
      seen.add(aid)
  for img_id, n in dropped.items():
    if n:
      skips.append(Skip("missing_key", src, "", f"{n} annotation(s) of the unusable image "
                                                 f"record {img_id} dropped"))
  return per_image, counts, skips


def _annotation_problem(a, aid, raw_id, img: dict | None, seen: set[int], cat_ids: set,
                        keep_crowd: bool) -> tuple[str, str] | None:
  """(skip kind, reason) when annotation ``a`` (id ``aid``, of image record
  ``img`` named by ``raw_id``) cannot be kept, else None; ``seen``: the
  annotation ids met before it."""
  if not isinstance(a, dict):
    return "missing_key", "annotation is not an object"
  if not _is_int(aid) or not _INT64[0] <= aid < _INT64[1]:
    return "missing_key", f"id {aid!r} missing or not a 64-bit integer"
  if aid in seen:
    return "duplicate_id", "annotation id used before (mask ids must be unique)"
  if img is None:
    return "unknown_image", f"image_id {raw_id!r} is not among the images"
  if "segmentation" not in a:
    return "missing_key", "annotation without 'segmentation'"
  if cat_ids and a.get("category_id") not in cat_ids:
    return "bad_category", (f"category_id {a.get('category_id')!r} is not among the "
                            f"{len(cat_ids)} categories")
  if a.get("iscrowd") and not keep_crowd:
    return "crowd", "iscrowd=1 region, not an instance mask (--coco-keep-crowd keeps it)"
  return None


def _make_items(inp: Input, images: dict[int, dict], per_image: dict[int, list],
                counts: dict[int, int]) -> tuple[list[Item], list[Skip]]:
  """One ``Item`` per image with kept annotations, in the JSON's image order
  (its digest covers the image, its annotations and the settings); a skip for
  each image left without any."""
  items, skips = [], []
  for img_id, img in images.items():
    anns = per_image[img_id]
    if not anns:
      skips.append(Skip("no_annotations", inp.annotations, _member(img),
                        f"image {img_id}: no usable annotations (of {counts[img_id]})"))
      continue
    doc = {"image": img, "anns": anns, "images": inp.images, "keep_crowd": inp.keep_crowd}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
    items.append(Item(str(img_id), inp.annotations, inp.images, img, tuple(anns), digest))
  return items, skips


# --- loading one image ------------------------------------------------------------------

class _Bad(Exception):
  """(kind, reason) of an unusable image or annotation."""

  def __init__(self, kind: str, reason: str):
    super().__init__(reason)
    self.kind, self.reason = kind, reason


def _orientation(im) -> int | None:
  try:
    v = im.getexif().get(_EXIF_ORIENTATION)
    return int(v) if v is not None else None
  except Exception:  # a broken EXIF block: the pixels as stored
    return None


def _encode_jpeg(rgb: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, "JPEG", quality=REENCODE_QUALITY, subsampling=0,
                            optimize=True)
  return buf.getvalue()


def prepare_image(raw: bytes, width: int, height: int) -> tuple[bytes, str | None]:
  """File bytes -> (JPEG bytes whose stored pixels are width x height, why it was
  re-encoded or None when ``raw`` is kept). Raises ``_Bad``."""
  try:
    with Image.open(io.BytesIO(raw)) as im:
      fmt, stored = im.format, im.size
      orient = _orientation(im)
      upright = stored[::-1] if orient in (5, 6, 7, 8) else stored
      turn = orient not in (None, 1) and upright == (width, height)
      if not turn and stored != (width, height):
        extra = (f" ({upright[0]}x{upright[1]} upright by its EXIF orientation)"
                 if upright != stored else "")
        raise _Bad("size_mismatch", f"{fmt} is {stored[0]}x{stored[1]}{extra}, "
                                    f"JSON says {width}x{height}")
      if fmt == "JPEG" and not turn:
        why = check_jpeg(raw, width, height)
        if why is not None:
          raise _Bad("corrupt_image", why)
        return raw, None
      im.load()
      pic = ImageOps.exif_transpose(im) if turn else im
      rgb = pixels.to_rgb(pic)  # the pixels `samjax segment` would see
  except _Bad:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise _Bad("corrupt_image", f"cannot decode: {type(e).__name__}: {e}") from None
  why = (f"EXIF orientation {orient} applied (stored upright)" if turn
         else f"{fmt} re-encoded as JPEG q{REENCODE_QUALITY}")
  return _encode_jpeg(rgb), why


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rasterise(seg, h: int, w: int) -> dict:
  """An annotation's ``segmentation`` -> compressed RLE {"size", "counts": str}
  at (h, w), exactly ``COCO.annToRLE``. Raises ``_Bad`` for unusable ones."""
  from pycocotools import mask as mask_utils
  if isinstance(seg, list):
    if not seg:
      raise _Bad("bad_segmentation", "empty polygon list")
    for k, poly in enumerate(seg):
      if not isinstance(poly, list) or not all(map(_number, poly)):
        raise _Bad("bad_segmentation", f"polygon {k} is not a list of finite numbers")
      if len(poly) % 2:
        raise _Bad("bad_segmentation", f"polygon {k} has an odd count ({len(poly)}) "
                                       "of coordinates")
      if len(poly) < 6:
        raise _Bad("degenerate_polygon", f"polygon {k} has {len(poly) // 2} point(s), "
                                         "needs at least 3")
    # Every part has >= 3 points, so frPyObjects takes them as polygons (a
    # first part of exactly 4 numbers would be read as a box).
    r = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
  elif isinstance(seg, dict) and "size" in seg and "counts" in seg:
    if not isinstance(seg["size"], list) or seg["size"] != [h, w]:
      raise _Bad("rle_size", f"RLE size {seg['size']!r} does not match image [{h}, {w}]")
    counts = seg["counts"]
    if isinstance(counts, list):
      if not all(_is_int(c) and c >= 0 for c in counts):
        raise _Bad("rle_invalid", "uncompressed RLE counts must be non-negative integers")
      if sum(counts) != h * w:
        raise _Bad("rle_invalid", f"RLE runs cover {sum(counts)} pixels, size says "
                                  f"{h}x{w}={h * w}")
      r = mask_utils.frPyObjects(seg, h, w)
    elif isinstance(counts, str):
      try:
        rle.check_counts(rle.parse_counts(counts), h, w)
      except (rle.RLEError, UnicodeEncodeError) as e:
        raise _Bad("rle_invalid", str(e)) from None
      return {"size": [h, w], "counts": counts}
    else:
      raise _Bad("rle_invalid", f"RLE counts of type {type(counts).__name__}")
  else:
    raise _Bad("bad_segmentation", "segmentation must be a list of polygons or an RLE "
                                   "{size, counts}")
  counts = r["counts"]
  return {"size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes)
          else counts}


def center_point(mask: np.ndarray, box) -> tuple[int, int]:
  """(x, y) of the pixel of ``mask`` farthest from its boundary (``POINT_RULE``),
  searched inside the tight box ``box`` (x, y, w, h): the same pixel as over
  the whole image, everything outside the box being background."""
  from scipy import ndimage
  x, y, bw, bh = (int(v) for v in box)
  crop = np.pad(mask[y:y + bh, x:x + bw].astype(bool), 1, constant_values=False)
  depth = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
  r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
  return x + int(c), y + int(r)


def annotation(a: dict, h: int, w: int) -> dict:
  """A COCO annotation -> SA-1B annotation dict at (h, w). Raises ``_Bad``."""
  from pycocotools import mask as mask_utils
  seg = rasterise(a["segmentation"], h, w)
  area = int(mask_utils.area(seg))
  if area == 0:
    raise _Bad("empty_mask", "the mask has no pixel at the image size")
  box = [float(v) for v in mask_utils.toBbox(seg)]
  px, py = center_point(mask_utils.decode(seg), box)
  out = {"id": a["id"], "segmentation": seg, "bbox": box, "area": area,
         "predicted_iou": 1.0, "stability_score": 1.0,
         "crop_box": [0.0, 0.0, float(w), float(h)], "point_coords": [[float(px), float(py)]],
         "iscrowd": int(bool(a.get("iscrowd")))}
  if "category_id" in a:
    out["category_id"] = a["category_id"]
  return out


def load(item: Item) -> tuple[dict | None, list[Skip]]:
  """Reads and checks one item (like ``sa1b.load``).

  Returns ``({"image": dict, "annotations": [SA-1B dicts], "jpeg": bytes,
  "reencoded": why or None}, skips)`` or ``(None, skips)`` when the image is
  unusable (missing, undecodable, of another size, no usable annotation).
  """
  src, member, img = item.source, item.member, item.image
  h, w, n = img["height"], img["width"], len(item.anns)
  lost = f"; its {n} annotation(s) dropped"
  path, tried = find_image(item.images, img)
  if path is None:
    return None, [Skip("missing_image", src, member,
                       f"image {img['id']} not found (tried {', '.join(tried)}){lost}")]
  try:
    raw = storage.read_bytes(path)
  except OSError as e:
    if storage.is_remote(path):  # a failing store is not a missing image
      raise store_failure(path, e) from e
    return None, [Skip("missing_image", src, member, f"{path}: {e}{lost}")]
  try:
    jpeg, reencoded = prepare_image(raw, w, h)
  except OSError as e:
    return None, [Skip("missing_image", src, member, f"{path}: {e}{lost}")]
  except _Bad as e:
    return None, [Skip(e.kind, src, member, f"{path}: {e.reason}{lost}")]
  good, skips = [], []
  for a in item.anns:
    try:
      good.append(annotation(a, h, w))
    except _Bad as e:
      skips.append(Skip(e.kind, src, member, f"annotation {a['id']}: {e.reason}"))
  if not good:
    skips.append(Skip("no_annotations", src, member,
                      f"image {img['id']}: no usable annotations (of {n})"))
    return None, skips
  record = {"image_id": img["id"], "width": w, "height": h, "file_name": member}
  return {"image": record, "annotations": good, "jpeg": jpeg, "reencoded": reencoded}, skips

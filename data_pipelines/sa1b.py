"""Reading and validating SA-1B inputs: tar shards (or folders) of jpg + json.

SA-1B ships ``sa_XXXXXX.tar`` files holding ``sa_<id>.jpg`` and ``sa_<id>.json``
pairs. The JSON is ``{"image": {image_id, width, height, file_name},
"annotations": [{id, segmentation: {size: [h, w], counts}, bbox: [x, y, w, h],
area, predicted_iou, stability_score, crop_box, point_coords}]}``.

``scan`` lists the (jpg, json) pairs of the inputs without reading the data
(tar headers only; member data is later read with one seek each), and
``load`` reads and validates one pair. Nothing here raises on bad data: every
problem becomes a ``Skip`` naming the file/member and the reason, and the
caller counts and reports them. Image-level problems skip the image;
annotation-level problems (bad RLE, bad box) skip only that annotation.

Inputs may be local or on ``gs://`` / ``s3://`` (``storage``). On a bucket a
member is one byte-range request, and a tar's headers are read through a
buffered remote file. A store that fails (still after ``storage``'s
retries) is not bad data: that raises ``storage.StorageError`` naming the
object and stops the conversion (a rerun resumes), instead of skipping
inputs that are fine.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io
import json
import math
import posixpath
import tarfile

import numpy as np
from PIL import Image

from data_pipelines import rle, storage

# Tars whose headers are scanned at once: a bucket answers each read in tens
# of ms, and SA-1B has 1000 tars.
SCAN_THREADS = 16

# Skip kinds, also the keys of the manifest's per-kind counts.
KINDS = ("unreadable_tar", "truncated_member", "missing_json", "missing_jpg",
         "invalid_json", "missing_key", "corrupt_jpeg", "size_mismatch",
         "rle_size", "rle_invalid", "bad_bbox", "no_annotations")


@dataclasses.dataclass(frozen=True)
class Skip:
  """One input (or annotation) left out of the dataset, and why."""
  kind: str     # one of KINDS
  source: str   # tar file or directory
  member: str   # member / file name ("" for the whole source)
  reason: str   # human-readable detail

  def __str__(self):
    where = f"{self.source}:{self.member}" if self.member else self.source
    return f"{where}: {self.kind}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Member:
  """Where one file's bytes are: a tar member's data range or a loose file."""
  name: str
  offset: int = -1  # data offset inside the tar; -1 for a loose file
  size: int = -1


@dataclasses.dataclass(frozen=True)
class Item:
  """One SA-1B image: its jpg and json, inside ``source``."""
  key: str      # file stem, e.g. "sa_1"
  source: str   # tar path, or directory of loose files
  jpg: Member
  json: Member

  @property
  def is_tar(self) -> bool:
    return self.jpg.offset >= 0


def store_failure(path: str, e: OSError) -> storage.StorageError:
  """``e`` (a failed read of remote ``path``) as the one-line error that stops
  a conversion: a store failing is never taken for bad data."""
  if isinstance(e, storage.StorageError):
    return e
  if isinstance(e, FileNotFoundError):  # the clients' message is a bare URL
    return storage.StorageError(f"read {path}: the object is gone (deleted after the "
                                "inputs were listed?)")
  first = str(e).splitlines()[0] if str(e) else ""
  return storage.StorageError(f"read {path}: {type(e).__name__}: {first}")


def _scan_tar(path: str) -> tuple[dict, dict, list[Skip]]:
  """Tar headers -> {stem: Member} for jpgs and jsons, plus problems."""
  jpgs, jsons, skips = {}, {}, []
  last = ""
  try:
    file_size = storage.getsize(path)
    with storage.open_read(path) as f, tarfile.open(fileobj=f, mode="r:") as tf:
      for m in tf:
        last = m.name
        if not m.isfile():
          continue
        stem, ext = posixpath.splitext(posixpath.basename(m.name))
        if ext.lower() not in (".jpg", ".json"):
          continue
        if m.offset_data + m.size > file_size:
          skips.append(Skip("truncated_member", path, m.name,
                            f"member needs {m.size} bytes, the tar ends "
                            f"{m.offset_data + m.size - file_size} bytes early"))
          continue
        (jpgs if ext.lower() == ".jpg" else jsons)[stem] = Member(
            m.name, m.offset_data, m.size)
  except (tarfile.TarError, OSError, EOFError) as e:
    if storage.is_remote(path) and isinstance(e, OSError):
      raise store_failure(path, e) from e
    skips.append(Skip("unreadable_tar", path, last,
                      f"tar unreadable after member {last!r}: {e}"))
  return jpgs, jsons, skips


def _scan_dir(path: str) -> tuple[dict, dict]:
  jpgs, jsons = {}, {}
  for name in storage.listdir(path):
    stem, ext = posixpath.splitext(name)
    if ext.lower() == ".jpg":
      jpgs[stem] = Member(name)
    elif ext.lower() == ".json":
      jsons[stem] = Member(name)
  return jpgs, jsons


def _pair(source: str, jpgs: dict, jsons: dict) -> tuple[list[Item], list[Skip]]:
  items, skips = [], []
  for stem in sorted(set(jpgs) | set(jsons), key=_natural_key):
    if stem not in jsons:
      skips.append(Skip("missing_json", source, jpgs[stem].name, "jpg without json"))
    elif stem not in jpgs:
      skips.append(Skip("missing_jpg", source, jsons[stem].name, "json without jpg"))
    else:
      items.append(Item(stem, source, jpgs[stem], jsons[stem]))
  return items, skips


def _natural_key(stem: str):
  """"sa_10" sorts after "sa_9"."""
  head, _, tail = stem.rpartition("_")
  return (head, int(tail)) if tail.isdigit() else (stem, -1)


def scan(paths: list[str]) -> tuple[list[Item], list[Skip]]:
  """Lists the images of ``paths`` (tar files and/or directories, local or
  on a bucket).

  A directory contributes its ``*.tar`` files and its loose jpg/json pairs.
  Items come out in a deterministic order (path, then natural file order);
  tars are scanned ``SCAN_THREADS`` at a time.
  Raises FileNotFoundError for a path that does not exist.
  """
  items, skips = [], []
  sources: list[tuple[str, bool]] = []  # (path, is a directory)
  for p in paths:
    if not storage.exists(p):
      raise FileNotFoundError(f"input {p!r} does not exist")
    if storage.isdir(p):
      sources.extend((storage.join(p, n), False) for n in storage.listdir(p)
                     if n.endswith(".tar"))
      sources.append((p, True))
    else:
      sources.append((p, False))

  def scan_one(source: tuple[str, bool]):
    src, is_dir = source
    if is_dir:
      jpgs, jsons = _scan_dir(src)
      tar_skips = []
    else:
      jpgs, jsons, tar_skips = _scan_tar(src)
    return tar_skips, _pair(src, jpgs, jsons)

  with cf.ThreadPoolExecutor(max_workers=max(1, min(SCAN_THREADS, len(sources)))) as pool:
    for tar_skips, (i, s) in pool.map(scan_one, sources):  # in input order
      skips.extend(tar_skips)
      items.extend(i)
      skips.extend(s)
  return items, skips


def read_member(item: Item, m: Member, fh=None) -> bytes:
  """Bytes of one member; ``fh`` an open binary handle on a local tar
  (optional). A tar member on a bucket is one byte-range request."""
  if not item.is_tar:
    return storage.read_bytes(storage.join(item.source, m.name))
  if fh is None:
    data = storage.read_range(item.source, m.offset, m.size)
  else:
    fh.seek(m.offset)
    data = fh.read(m.size)
  if len(data) != m.size:
    raise EOFError(f"member {m.name} has {len(data)} of {m.size} bytes")
  return data


def check_jpeg(data: bytes, width: int, height: int) -> str | None:
  """Returns why ``data`` is not a decodable JPEG of width x height, or None.

  Decodes at 1/8 scale (``Image.draft``): every entropy-coded byte is still
  read, so truncation and corrupt scans are caught at ~1/10 of the cost of
  a full decode.
  """
  try:
    with Image.open(io.BytesIO(data)) as im:
      if im.format != "JPEG":
        return f"not a JPEG (PIL sees {im.format})"
      if im.size != (width, height):
        return f"size:JPEG is {im.size[0]}x{im.size[1]}, JSON says {width}x{height}"
      im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
      im.load()
  except Exception as e:  # PIL raises OSError, SyntaxError, ...
    return f"cannot decode: {type(e).__name__}: {e}"
  return None


def _check_annotation(a, h: int, w: int) -> tuple[str, str] | None:
  """(kind, reason) if annotation ``a`` is unusable for an h x w image."""
  if not isinstance(a, dict):
    return "missing_key", "annotation is not an object"
  for key in ("id", "segmentation", "bbox", "area"):
    if key not in a:
      return "missing_key", f"annotation without {key!r}"
  seg = a["segmentation"]
  if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
    return "missing_key", "segmentation needs 'size' and 'counts'"
  if list(seg["size"]) != [h, w]:
    return "rle_size", f"RLE size {list(seg['size'])} does not match image [{h}, {w}]"
  if not isinstance(seg["counts"], str):
    return "rle_invalid", "counts must be a compressed RLE string"
  try:
    rle.check_counts(rle.parse_counts(seg["counts"]), h, w)
  except (rle.RLEError, UnicodeEncodeError) as e:
    return "rle_invalid", str(e)
  box = a["bbox"]
  try:
    x, y, bw, bh = (float(v) for v in box)
  except (TypeError, ValueError):
    return "bad_bbox", f"bbox {box!r} is not 4 numbers"
  if not all(map(math.isfinite, (x, y, bw, bh))):
    return "bad_bbox", f"bbox {box!r} is not finite"
  if min(x, y, bw, bh) < 0:
    return "bad_bbox", f"bbox {box!r} has a negative value"
  if x + bw > w + 1e-3 or y + bh > h + 1e-3:
    return "bad_bbox", f"bbox {box!r} leaves the {w}x{h} image"
  pts = a.get("point_coords") or []
  try:
    np.asarray(pts, np.float64).reshape(-1, 2)
  except (TypeError, ValueError):
    return "missing_key", f"point_coords {pts!r} is not a list of [x, y]"
  return None


def _read_or_skip(item: Item, m: Member, fh) -> tuple[bytes | None, Skip | None]:
  """(bytes, None), or (None, the Skip) for a member cut short or unreadable
  on local disk; a failing store raises (``store_failure``)."""
  try:
    return read_member(item, m, fh), None
  except (OSError, EOFError) as e:
    if storage.is_remote(item.source) and isinstance(e, OSError):
      raise store_failure(item.source, e) from e
    return None, Skip("truncated_member", item.source, m.name, str(e))


def load(item: Item, fh=None) -> tuple[dict | None, list[Skip]]:
  """Reads and validates one item.

  Returns ``({"image": dict, "annotations": [valid dicts], "jpeg": bytes},
  skips)`` or ``(None, skips)`` when the image itself is unusable.
  """
  src = item.source
  jpg, skip = _read_or_skip(item, item.jpg, fh)
  if skip is None:
    raw, skip = _read_or_skip(item, item.json, fh)
  if skip is not None:
    return None, [skip]
  try:
    meta = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return None, [Skip("invalid_json", src, item.json.name, f"invalid JSON: {e}")]
  image = meta.get("image") if isinstance(meta, dict) else None
  anns = meta.get("annotations") if isinstance(meta, dict) else None
  if not isinstance(image, dict) or not isinstance(anns, list):
    return None, [Skip("missing_key", src, item.json.name,
                       "JSON needs an 'image' object and an 'annotations' list")]
  for key in ("image_id", "width", "height"):
    if not isinstance(image.get(key), int):
      return None, [Skip("missing_key", src, item.json.name,
                         f"image.{key} missing or not an integer")]
  w, h = image["width"], image["height"]
  why = check_jpeg(jpg, w, h)
  if why is not None:
    kind = "size_mismatch" if why.startswith("size:") else "corrupt_jpeg"
    return None, [Skip(kind, src, item.jpg.name, why.removeprefix("size:"))]
  good, skips = [], []
  for i, a in enumerate(anns):
    bad = _check_annotation(a, h, w)
    if bad is None:
      good.append(a)
    else:
      aid = a.get("id", f"#{i}") if isinstance(a, dict) else f"#{i}"
      skips.append(Skip(bad[0], src, item.json.name, f"annotation {aid}: {bad[1]}"))
  if not good:
    skips.append(Skip("no_annotations", src, item.json.name,
                      f"no valid annotations (of {len(anns)})"))
    return None, skips
  return {"image": image, "annotations": good, "jpeg": jpg}, skips

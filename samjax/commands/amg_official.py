"""The official ``scripts/amg.py`` output layout, for ``samjax amg --output-format official``.

Per image ``<stem>``, either (default) a folder ``<stem>/`` with one binary
PNG per mask, ``0.png``, ``1.png``, ... (0 / 255, uint8) and ``metadata.csv``
(the official header and columns, values printed with ``str()``, rows joined
by newlines without a final one), or with ``--convert-to-rle`` a file
``<stem>.json`` holding the generator's records as a JSON list (COCO RLE
segmentations), written like the official ``json.dump(masks, f)``.

Unlike the official script these are written atomically and the completion
marker last (``metadata.csv``, or the JSON), so a killed run resumes. ``out``
may be local, ``gs://`` or ``s3://`` (``data_pipelines.storage``).
"""

from __future__ import annotations

import json
import re

import numpy as np

from data_pipelines import atomic_io, storage

CSV_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
              "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")
RECORD_KEYS = ("segmentation", "area", "bbox", "predicted_iou", "point_coords",
               "stability_score", "crop_box")
_MASK_PNG = re.compile(r"(\d+)\.png(?:" + re.escape(atomic_io.TEMP_MARKER) + r"[0-9a-f]+)?")


def output_path(out: str, stem: str, rle: bool) -> str:
  """What one image produces: the folder ``<stem>`` or the file ``<stem>.json``."""
  return storage.join(out, stem + ".json" if rle else stem)


def metadata_csv(records: list[dict]) -> str:
  """The official ``metadata.csv`` text of ``records`` (binary-mask records)."""
  rows = [CSV_HEADER]
  for i, r in enumerate(records):
    rows.append(",".join([
        str(i), str(r["area"]), *[str(x) for x in r["bbox"]],
        *[str(x) for x in r["point_coords"][0]], str(r["predicted_iou"]),
        str(r["stability_score"]), *[str(x) for x in r["crop_box"]]]))
  return "\n".join(rows)


def encode_png(mask: np.ndarray) -> bytes:
  """[H, W] bool -> PNG bytes of ``mask * 255`` as uint8.

  With OpenCV installed (the official script requires it), the bytes are
  the official ``cv2.imwrite`` ones; without it PIL writes the same pixels
  (other PNG compression bytes).
  """
  pixels = mask.astype(np.uint8) * np.uint8(255)
  try:
    import cv2
  except ImportError:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
  ok, data = cv2.imencode(".png", pixels)
  if not ok:
    raise OSError(f"OpenCV could not encode a {pixels.shape} mask as PNG")
  return data.tobytes()


def write(records: list[dict], out: str, stem: str, rle: bool) -> None:
  """Writes one image's outputs; the completion marker last."""
  path = output_path(out, stem, rle)
  if rle:
    atomic_io.write_text(path, json.dumps(records))
    return
  atomic_io.ensure_dir(path)
  # A redo may make fewer masks than the earlier, interrupted run: its
  # extra N.png (and temp files) would otherwise be mistaken for masks.
  for name in _names(path):
    m = _MASK_PNG.fullmatch(name)
    if m and (int(m.group(1)) >= len(records) or atomic_io.TEMP_MARKER in name):
      storage.remove(storage.join(path, name))
  for i, r in enumerate(records):
    atomic_io.write_bytes(storage.join(path, f"{i}.png"), encode_png(r["segmentation"]))
  atomic_io.write_text(storage.join(path, "metadata.csv"), metadata_csv(records))


def _names(folder: str) -> set[str]:
  """Names in ``folder``; empty when there is none (on a bucket: no object
  under the prefix yet)."""
  try:
    return set(storage.listdir(folder))
  except FileNotFoundError:
    return set()


def problem(out: str, stem: str, rle: bool) -> tuple[bool, str | None]:
  """(done, why not): done when the completion marker is whole.

  Folder: ``metadata.csv`` starts with the official header and every row's
  ``N.png`` exists. JSON: a list of records with the official keys. ``why``
  is None when nothing was there at all.
  """
  path = output_path(out, stem, rle)
  name = storage.basename(path)
  try:
    if rle:
      doc = json.loads(storage.read_bytes(path))
      if not isinstance(doc, list) or not all(
          isinstance(r, dict) and all(k in r for k in RECORD_KEYS) for r in doc):
        return False, f"{name} is not a list of complete mask records"
      return True, None
    lines = storage.read_text(storage.join(path, "metadata.csv")).split("\n")
  except FileNotFoundError:
    return False, None
  except (OSError, ValueError) as e:  # ValueError: JSON and UTF-8 decoding
    return False, f"{name} is unreadable ({type(e).__name__}: {e})"
  if lines[0] != CSV_HEADER:
    return False, f"{name}/metadata.csv has not the official header"
  present = _names(path)  # one listing, not a request per mask
  missing = [i for i in range(len(lines) - 1) if f"{i}.png" not in present]
  if missing:
    return False, f"{name}/{missing[0]}.png is missing"
  return True, None

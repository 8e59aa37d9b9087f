"""Random access over a TFDS-prepared SA-1B (``data.source = "tfds:segment_anything"``).

A team that prepared SA-1B with ``tfds build segment_anything
--file_format=array_record`` reads it here without converting it again and
without TensorFlow: ``TFDSSource(name, split, data_dir)[i]`` reads TFDS
record ``i`` through ``builder.as_data_source`` (ArrayRecord or Parquet,
TFDS's random-access formats) and returns the serialized samjax
``tf.train.Example`` (``example_codec``) of that image, or a ``ReadError``.
Everything downstream (``decode.SA1BDecode``, prompt/mask sampling,
batching, per-host slicing, grain iterator state) is the samjax pipeline,
unchanged.

What the record holds, field by field, against ``samjax data convert``
(``sa1b_to_tfrecord.convert`` with ``copy=None``) of the same image:

* ``image/encoded``: the image bytes TFDS stored, untouched. The
  ``segment_anything`` builder gives ``tfds.features.Image`` the path of
  the SA-1B ``.jpg``, which TFDS stores verbatim (no re-encoding); image
  decoding is skipped on read (``tfds.decode.SkipDecoding``), so the same
  JPEG bytes reach the same decoder (PIL with ``draft``, ``decode.decode_image``)
  and give the same uint8 pixels. A non-JPEG payload (a dataset whose images
  TFDS encoded from arrays, PNG by default) is passed on as is, with
  ``image/format`` naming PIL's format; PIL decodes it at full size.
* masks: TFDS keeps SA-1B's COCO RLE ``counts`` strings; they are copied.
* ``mask/bbox``, ``mask/crop_box``: TFDS stores them as float32
  ``[ymin, xmin, ymax, xmax] / (h, w)``. SA-1B's coordinates are whole
  pixels, and a whole pixel is the unique integer that maps back to the
  stored float32, so x, y, w, h are recovered exactly; a non-integer
  coordinate comes back to within ~1e-4 pixel (float32 rounding).
* ids, area, predicted_iou, stability_score, point_coords, sizes, file
  name: copied (TFDS stores them as uint64 / float64 / str).
* validation: the converter's checks run on every read (``validate=True``):
  an annotation ``sa1b`` would drop (bad RLE, bad box) is dropped; an image
  whose JPEG header disagrees with its size, or with no valid annotation,
  comes back as a ``ReadError``, skipped and counted by the pipeline. (The
  converter leaves such an image out of the dataset instead, so from that
  record on the two sources' record indices differ.)

With the same records in the same order, the samjax and TFDS sources give
byte-identical records and hence identical batches. TFDS's own order is
its writer's (shuffled by a hash of each image id), not SA-1B's tar order;
the global shuffle hides that, but a samjax conversion of the same tars is
a different order and so a different (equally valid) stream of batches.

TFDS datasets prepared as TFRecord are refused with a clear error: TFDS
reads TFRecord only through TensorFlow (``tf.data``), which samjax does not
depend on. Prepare with ``--file_format=array_record`` or convert with
``tfds convert_format --out_file_format=array_record``.
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
from PIL import Image

from data_pipelines.grain_source import ReadError

SAMJAX = "samjax"
TFDS_PREFIX = "tfds:"
FORMS = ('"samjax" (output of `samjax data convert`)',
         '"tfds:NAME" or "tfds:NAME:VERSION" (a TFDS-prepared dataset, e.g. '
         '"tfds:segment_anything")')

# The TFDS features the adapter reads (the segment_anything builder's spec).
REQUIRED_FEATURES = (
    "image/content", "image/file_name", "image/height", "image/image_id", "image/width",
    "annotations/area", "annotations/bbox", "annotations/crop_box", "annotations/id",
    "annotations/point_coords", "annotations/predicted_iou",
    "annotations/segmentation/counts", "annotations/segmentation/size",
    "annotations/stability_score")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A parsed ``data.source``: ``kind`` "samjax" or "tfds" (+ name, version)."""
  kind: str
  name: str = ""
  version: str = ""

  @property
  def tfds_name(self) -> str:
    """``NAME`` or ``NAME:VERSION``, as ``tfds.builder`` takes it."""
    return f"{self.name}:{self.version}" if self.version else self.name


_NAME = re.compile(r"[a-z0-9_]+(/[A-Za-z0-9_.-]+)?")  # dataset[/config]
_VERSION = re.compile(r"\d+\.\d+\.\d+")


def parse_source(spec: str) -> SourceSpec:
  """``data.source`` string -> ``SourceSpec``; ValueError naming the accepted forms."""
  if not isinstance(spec, str):
    raise ValueError(f"data.source must be a string, got {type(spec).__name__}")
  if spec == SAMJAX:
    return SourceSpec(SAMJAX)
  if spec.startswith(TFDS_PREFIX):
    name, _, version = spec[len(TFDS_PREFIX):].partition(":")
    if not _NAME.fullmatch(name):
      raise ValueError(f"data.source {spec!r}: {name!r} is not a TFDS dataset name "
                       "(lower-case letters, digits, '_', optionally /CONFIG)")
    if version and not _VERSION.fullmatch(version):
      raise ValueError(f"data.source {spec!r}: version {version!r} is not X.Y.Z")
    return SourceSpec("tfds", name, version)
  raise ValueError(f"unknown data.source {spec!r}: expected " + " or ".join(FORMS))


class TFDSFormatError(ValueError):
  """The TFDS dataset cannot be read by random access without TensorFlow."""


def _tfds():
  import tensorflow_datasets as tfds
  return tfds


def open_data_source(name: str, split: str, data_dir: str | None):
  """(TFDS random-access data source with undecoded images, file instructions).

  Raises ``TFDSFormatError`` (prepared as TFRecord, not prepared in
  ``data_dir``, or not an SA-1B feature spec) with what to do.
  """
  tfds = _tfds()
  from tensorflow_datasets.core import file_adapters
  from tensorflow_datasets.core.data_sources import base as ds_base
  where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  builder = tfds.builder(name, data_dir=data_dir or None)
  if not builder.is_prepared():
    raise TFDSFormatError(
        f"TFDS dataset {name!r} is not prepared in {where}: prepare it with "
        f"`tfds build {name.split(':')[0]} --data_dir=DIR --file_format=array_record` "
        "(or set data.tfds_data_dir to where it was prepared)")
  info = builder.info
  flat = set(_flat_keys(info.features))
  missing = [k for k in REQUIRED_FEATURES if k not in flat]
  if missing:
    raise TFDSFormatError(f"TFDS dataset {name!r} lacks the segment_anything features "
                          f"{missing}; it is not an SA-1B preparation")
  random_access = file_adapters.FileFormat.with_random_access()
  have = info.available_file_formats() or ({info.file_format} if info.file_format else set())
  if not have & random_access:
    fmts = ", ".join(sorted(f.value for f in have)) or "unknown"
    raise TFDSFormatError(
        f"TFDS dataset {name!r} in {builder.data_dir} is stored as {fmts}, which TFDS "
        "reads only through TensorFlow (tf.data); samjax reads TFDS datasets without "
        "TensorFlow, by random access. Prepare it with `tfds build "
        f"{name.split(':')[0]} --file_format=array_record`, or convert this copy with "
        f"`tfds convert_format --dataset_version_dir={builder.data_dir} "
        "--out_file_format=array_record --out_dir=...` (which needs TensorFlow)")
  decoders = {"image": {"content": tfds.decode.SkipDecoding()}}
  ds = builder.as_data_source(split=split, decoders=decoders)
  instructions = ds_base.file_instructions(ds.dataset_info, split)
  return ds, instructions


def _flat_keys(features) -> list[str]:
  """'a/b/c' names of a TFDS FeaturesDict's leaves (through Sequence)."""
  tfds = _tfds()
  out = []

  def walk(f, prefix):
    if isinstance(f, tfds.features.Sequence):
      f = f.feature
    if isinstance(f, tfds.features.FeaturesDict):
      for k, v in f.items():
        walk(v, f"{prefix}{k}/")
    else:
      out.append(prefix[:-1])

  walk(features, "")
  return out


class TFDSSource:
  """``len()`` and ``[i] -> bytes | ReadError`` over a TFDS-prepared SA-1B split.

  The bytes are the samjax ``tf.train.Example`` of TFDS record ``i`` (see the
  module docstring), so it plugs into ``pipeline.make_map_dataset`` where a
  ``TFRecordSource`` would. Pickles without the TFDS data source (grain
  worker processes reopen it lazily).

  Args:
    name: TFDS name, ``"segment_anything"`` or ``"segment_anything:1.0.0"``.
    split: a TFDS split (slices like ``"train[:1%]"`` work too).
    data_dir: the TFDS data_dir it was prepared in; "" or None: TFDS's default.
    validate: run the converter's per-image / per-annotation checks.
  """

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None,
               validate: bool = True):
    self.name, self.split, self.data_dir = name, split, data_dir or None
    self.validate = validate
    ds, instructions = open_data_source(name, split, self.data_dir)
    self._ds = ds
    self._len = len(ds)
    self.paths = [str(fi.filename) + (f"[{fi.skip}:]" if fi.skip else "")
                  for fi in instructions]
    self.starts = np.cumsum([0] + [int(fi.take) for fi in instructions])
    if self.starts[-1] != self._len:  # naming only; never wrong about the data
      self.paths, self.starts = [f"{name}/{split}"], np.array([0, self._len])

  def __len__(self) -> int:
    return self._len

  def _data(self):
    if self._ds is None:
      self._ds, _ = open_data_source(self.name, self.split, self.data_dir)
    return self._ds

  def __getitem__(self, index: int) -> bytes | ReadError:
    index = int(index)
    k = int(np.searchsorted(self.starts, index, "right")) - 1
    where = f"{self.paths[k]}#{index - self.starts[k]}"
    try:
      return to_samjax_record(self._data()[index], where, self.validate)
    except Exception as e:  # a bad record is skipped and counted, never fatal
      msg = str(e) if where in str(e) else f"{where}: {e}"
      return ReadError(where, f"{type(e).__name__}: {msg}")

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_ds"] = None
    return state

  def __repr__(self) -> str:
    return (f"TFDSSource({self.name!r}, split={self.split!r}, data_dir={self.data_dir!r}, "
            f"{len(self)} records)")


def _str(v) -> str:
  if isinstance(v, np.ndarray):
    v = v.item()
  return v.decode() if isinstance(v, bytes) else str(v)


def recover_coordinates(q, size) -> np.ndarray:
  """The pixel coordinates ``v`` that TFDS stored as ``float32(v / size)`` = ``q``.

  A whole pixel is exact (no other integer maps to the same float32 when
  ``size`` < 2**23); anything else is ``q * size`` (float32 rounding).
  ``q`` and ``size`` broadcast; returns float64.
  """
  q = np.asarray(q, np.float32)
  size = np.asarray(size, np.float64)
  v = q.astype(np.float64) * size
  r = np.round(v)
  return np.where((r / size).astype(np.float32) == q, r, v)


def _xywh(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
  """TFDS ``[ymin, xmin, ymax, xmax]`` (relative, float32, (N, 4)) -> SA-1B
  ``[x, y, w, h]`` in pixels, float64 (N, 4)."""
  yx = recover_coordinates(boxes.reshape(-1, 4), np.array([h, w, h, w]))
  y0, x0, y1, x1 = yx.T
  return np.stack([x0, y0, x1 - x0, y1 - y0], -1)


def to_sa1b(ex: dict) -> tuple[dict, bytes, list[dict]]:
  """One decoded TFDS ``segment_anything`` example -> SA-1B (image dict, image
  bytes, annotation dicts), as ``sa1b.load`` reads them from the tar."""
  img = ex["image"]
  h, w = int(img["height"]), int(img["width"])
  image = {"image_id": int(img["image_id"]), "width": w, "height": h,
           "file_name": _str(img["file_name"])}
  content = img["content"]
  if isinstance(content, np.ndarray):  # SkipDecoding may hand back a 0-d array
    content = content.item()
  if not isinstance(content, bytes):
    raise TypeError(f"image/content is {type(content).__name__}, not encoded bytes "
                    "(the source must read it with tfds.decode.SkipDecoding)")
  a = ex["annotations"]
  n = len(a["id"])
  ids = np.asarray(a["id"], np.uint64).tolist()
  areas = np.asarray(a["area"], np.uint64).tolist()
  bbox = _xywh(np.asarray(a["bbox"], np.float32), h, w).tolist()
  crop = _xywh(np.asarray(a["crop_box"], np.float32), h, w).tolist()
  points = np.asarray(a["point_coords"], np.float64).reshape(n, -1, 2).tolist() if n else []
  piou = np.asarray(a["predicted_iou"], np.float64).tolist()
  stab = np.asarray(a["stability_score"], np.float64).tolist()
  counts = [_str(c) for c in a["segmentation"]["counts"]]
  sizes = np.asarray(a["segmentation"]["size"], np.uint64).reshape(n, 2).tolist()
  anns = [{"id": ids[i], "segmentation": {"size": sizes[i], "counts": counts[i]},
           "bbox": bbox[i], "area": areas[i], "predicted_iou": piou[i],
           "stability_score": stab[i], "crop_box": crop[i], "point_coords": points[i]}
          for i in range(n)]
  return image, content, anns


def valid_annotations(anns: list[dict], h: int, w: int) -> list[dict]:
  """The annotations ``sa1b.load`` keeps (``sa1b._check_annotation``).

  All of them checked at once first (one vectorised RLE parse, ~100x fewer
  numpy calls than one check per mask); only when something fails are they
  checked one by one to find which.
  """
  from data_pipelines import rle, sa1b
  try:
    runs, offsets = rle.parse_counts_batch([a["segmentation"]["counts"] for a in anns])
    ok = rle.check_counts_batch(runs, offsets, h, w) < 0
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    ok = ok and bool(np.isfinite(boxes).all() and (boxes >= 0).all()
                     and (boxes[:, 0] + boxes[:, 2] <= w + 1e-3).all()
                     and (boxes[:, 1] + boxes[:, 3] <= h + 1e-3).all())
    ok = ok and all(a["segmentation"]["size"] == [h, w] for a in anns)
  except rle.RLEError:
    ok = False
  if ok:
    return anns
  return [a for a in anns if sa1b._check_annotation(a, h, w) is None]


def _image_header(data: bytes) -> tuple[str, int, int]:
  """(PIL format, width, height) from the header only (no pixel decode)."""
  with Image.open(io.BytesIO(data)) as im:
    return im.format, im.size[0], im.size[1]


def to_samjax_record(ex: dict, where: str = "record", validate: bool = True) -> bytes:
  """One decoded TFDS example -> the serialized samjax Example of that image
  (``example_codec.encode``, no training copies): byte-identical to what
  ``samjax data convert`` writes for the same SA-1B image."""
  from data_pipelines import example_codec
  image, content, anns = to_sa1b(ex)
  h, w = image["height"], image["width"]
  fmt = "JPEG"
  if validate:
    fmt, iw, ih = _image_header(content)
    if (iw, ih) != (w, h):
      raise ValueError(f"{where}: image is {iw}x{ih}, its record says {w}x{h}")
    good = valid_annotations(anns, h, w)
    if not good:
      raise ValueError(f"{where}: no valid annotations (of {len(anns)})")
    anns = good
  elif content[:2] != b"\xff\xd8":
    fmt = _image_header(content)[0]
  data = example_codec.encode(image, content, anns)
  if fmt != "JPEG":
    from tensorflow_datasets.proto import tf_example_pb2
    msg = tf_example_pb2.Example.FromString(data)
    fl = msg.features.feature["image/format"].bytes_list
    fl.value[:] = [str(fmt).lower().encode()]
    data = msg.SerializeToString(deterministic=True)
  return data

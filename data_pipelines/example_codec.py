"""One SA-1B image (+ its masks) <-> a serialized ``tf.train.Example``.

The protobuf classes come from ``tensorflow_datasets.proto`` (same wire format
as TensorFlow's), so no TensorFlow is needed to write or read. The JPEG bytes
are stored untouched; masks keep their original compressed COCO RLE strings.
Per-mask features are parallel lists of length N (number of masks), flattened
where a mask has several numbers:

=========================  ======  ========  =========================================
key                        type    length    meaning
=========================  ======  ========  =========================================
image/encoded              bytes   1         original JPEG file bytes
image/format               bytes   1         b"jpeg"
image/id                   int64   1         SA-1B image_id
image/height, image/width  int64   1         pixels (checked against the JPEG)
image/file_name            bytes   1         e.g. b"sa_1.jpg"
mask/id                    int64   N         annotation id
mask/counts                bytes   N         COCO compressed RLE counts, size = (h, w)
mask/bbox                  float   4N        x, y, w, h in original pixels
mask/area                  int64   N         foreground pixels
mask/predicted_iou         float   N
mask/stability_score       float   N
mask/crop_box              float   4N        x, y, w, h
mask/num_points            int64   N         points per mask (1 in SA-1B)
mask/point_coords          float   2*sum     x, y of each point, mask after mask
=========================  ======  ========  =========================================
"""

from __future__ import annotations

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

# key -> (protobuf list kind, per-mask multiplicity or None for scalar image
# features). Written into the manifest as the feature spec.
FEATURES: dict[str, tuple[str, int | None]] = {
    "image/encoded": ("bytes", None),
    "image/format": ("bytes", None),
    "image/id": ("int64", None),
    "image/height": ("int64", None),
    "image/width": ("int64", None),
    "image/file_name": ("bytes", None),
    "mask/id": ("int64", 1),
    "mask/counts": ("bytes", 1),
    "mask/bbox": ("float", 4),
    "mask/area": ("int64", 1),
    "mask/predicted_iou": ("float", 1),
    "mask/stability_score": ("float", 1),
    "mask/crop_box": ("float", 4),
    "mask/num_points": ("int64", 1),
    "mask/point_coords": ("float", 0),  # 2 per point, variable per mask
}


class ExampleError(ValueError):
  """A serialized Example that does not follow ``FEATURES``."""


def feature_spec() -> dict[str, dict]:
  """JSON-able description of ``FEATURES`` for the manifest."""
  return {k: {"type": t, "per_mask": m} for k, (t, m) in FEATURES.items()}


def _feature(kind: str, values) -> tf_feature_pb2.Feature:
  if kind == "bytes":
    return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=values))
  if kind == "int64":
    return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=values))
  return tf_feature_pb2.Feature(float_list=tf_feature_pb2.FloatList(value=values))


def encode(image: dict, image_bytes: bytes, annotations: list[dict]) -> bytes:
  """SA-1B JSON ``image`` dict + JPEG bytes + annotation dicts -> Example bytes.

  ``annotations`` are already validated (see ``sa1b.validate``). Serialisation
  is deterministic so that a rerun writes byte-identical shards.
  """
  anns = annotations
  points = [np.asarray(a.get("point_coords") or [], np.float64).reshape(-1, 2)
            for a in anns]
  values = {
      "image/encoded": [image_bytes],
      "image/format": [b"jpeg"],
      "image/id": [int(image["image_id"])],
      "image/height": [int(image["height"])],
      "image/width": [int(image["width"])],
      "image/file_name": [str(image.get("file_name", "")).encode()],
      "mask/id": [int(a["id"]) for a in anns],
      "mask/counts": [_as_bytes(a["segmentation"]["counts"]) for a in anns],
      "mask/bbox": [float(v) for a in anns for v in a["bbox"]],
      "mask/area": [int(a["area"]) for a in anns],
      "mask/predicted_iou": [float(a.get("predicted_iou", 0.0)) for a in anns],
      "mask/stability_score": [float(a.get("stability_score", 0.0)) for a in anns],
      "mask/crop_box": [float(v) for a in anns
                        for v in (a.get("crop_box") or [0, 0, image["width"],
                                                         image["height"]])],
      "mask/num_points": [len(p) for p in points],
      "mask/point_coords": [float(v) for p in points for v in p.reshape(-1)],
  }
  feats = {k: _feature(FEATURES[k][0], v) for k, v in values.items()}
  ex = tf_example_pb2.Example(features=tf_feature_pb2.Features(feature=feats))
  return ex.SerializeToString(deterministic=True)


def _as_bytes(counts) -> bytes:
  if isinstance(counts, bytes):
    return counts
  return str(counts).encode("ascii")


def decode(data: bytes, where: str = "record") -> dict:
  """Example bytes -> dict of Python/numpy values keyed like ``FEATURES``.

  Scalars come back as ``int``/``bytes``; per-mask lists as numpy arrays
  (``mask/bbox`` and ``mask/crop_box`` shaped (N, 4), ``mask/point_coords``
  (P, 2)) and ``mask/counts`` as a list of bytes. Raises ``ExampleError``
  naming ``where`` when a key is missing or lengths disagree.
  """
  try:
    ex = tf_example_pb2.Example.FromString(data)
  except Exception as e:  # protobuf's DecodeError has no stable import path
    raise ExampleError(f"{where}: not a tf.train.Example: {e}") from e
  fmap = ex.features.feature
  out = {}
  for key, (kind, _) in FEATURES.items():
    if key not in fmap:
      raise ExampleError(f"{where}: missing feature {key!r}")
    f = fmap[key]
    if kind == "bytes":
      out[key] = list(f.bytes_list.value)
    elif kind == "int64":
      out[key] = np.asarray(f.int64_list.value, np.int64)
    else:
      out[key] = np.asarray(f.float_list.value, np.float32)
  for key, (_, mult) in FEATURES.items():
    if mult is None:
      if len(out[key]) != 1:
        raise ExampleError(f"{where}: {key!r} must hold one value, has {len(out[key])}")
      out[key] = out[key][0]
      if isinstance(out[key], np.integer):
        out[key] = int(out[key])
  n = len(out["mask/counts"])
  for key, (_, mult) in FEATURES.items():
    if mult and len(out[key]) != mult * n:
      raise ExampleError(f"{where}: {key!r} has {len(out[key])} values for {n} masks")
  npts = int(out["mask/num_points"].sum())
  if len(out["mask/point_coords"]) != 2 * npts:
    raise ExampleError(f"{where}: mask/point_coords has {len(out['mask/point_coords'])}"
                       f" values for {npts} points")
  out["mask/bbox"] = out["mask/bbox"].reshape(n, 4)
  out["mask/crop_box"] = out["mask/crop_box"].reshape(n, 4)
  out["mask/point_coords"] = out["mask/point_coords"].reshape(npts, 2)
  return out

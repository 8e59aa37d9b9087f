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

Optional training-resolution copies (``train_copy.py``; each group is
present as a whole or not at all):

=========================  ======  ========  =========================================
train/image/encoded        bytes   1         JPEG, longest side = the model size S
train/image/height, width  int64   1         its pixels (h', w')
train/mask/counts          bytes   N         COCO RLE of each mask at (g_h, g_w)
train/mask/height, width   int64   1         (g_h, g_w) = resized_shape(h, w, G)
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

# Optional groups (same (kind, multiplicity) convention): all keys of a group
# or none of them.
TRAIN_GROUPS: dict[str, dict[str, tuple[str, int | None]]] = {
    "train/image": {"train/image/encoded": ("bytes", None),
                    "train/image/height": ("int64", None),
                    "train/image/width": ("int64", None)},
    "train/mask": {"train/mask/counts": ("bytes", 1),
                   "train/mask/height": ("int64", None),
                   "train/mask/width": ("int64", None)},
}
TRAIN_FEATURES = {k: v for g in TRAIN_GROUPS.values() for k, v in g.items()}


class ExampleError(ValueError):
  """A serialized Example that does not follow ``FEATURES``."""


def feature_spec(train_groups: tuple[str, ...] = ()) -> dict[str, dict]:
  """JSON-able description of ``FEATURES`` (+ optional groups) for the manifest."""
  spec = {k: {"type": t, "per_mask": m} for k, (t, m) in FEATURES.items()}
  for g in train_groups:
    spec.update({k: {"type": t, "per_mask": m, "optional": True}
                 for k, (t, m) in TRAIN_GROUPS[g].items()})
  return spec


def _feature(kind: str, values) -> tf_feature_pb2.Feature:
  if kind == "bytes":
    return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=values))
  if kind == "int64":
    return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=values))
  return tf_feature_pb2.Feature(float_list=tf_feature_pb2.FloatList(value=values))


def encode(image: dict, image_bytes: bytes, annotations: list[dict],
           train: dict | None = None) -> bytes:
  """SA-1B JSON ``image`` dict + JPEG bytes + annotation dicts -> Example bytes.

  ``annotations`` are already validated (see ``sa1b.validate``); ``train``
  holds optional ``TRAIN_FEATURES`` values (``train_copy.make``), whole
  groups only. Serialisation is deterministic so that a rerun writes
  byte-identical shards.
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
  for key, v in (train or {}).items():
    if key not in TRAIN_FEATURES:
      raise KeyError(f"{key!r} is not an optional feature ({sorted(TRAIN_FEATURES)})")
    values[key] = list(v) if TRAIN_FEATURES[key][1] else [v]
  feats = {k: _feature((FEATURES.get(k) or TRAIN_FEATURES[k])[0], v)
           for k, v in values.items()}
  ex = tf_example_pb2.Example(features=tf_feature_pb2.Features(feature=feats))
  return ex.SerializeToString(deterministic=True)


def _as_bytes(counts) -> bytes:
  if isinstance(counts, bytes):
    return counts
  return str(counts).encode("ascii")


def _values(f, kind: str):
  if kind == "bytes":
    return list(f.bytes_list.value)
  if kind == "int64":
    return np.asarray(f.int64_list.value, np.int64)
  return np.asarray(f.float_list.value, np.float32)


def decode(data: bytes, where: str = "record") -> dict:
  """Example bytes -> dict of Python/numpy values keyed like ``FEATURES``.

  Scalars come back as ``int``/``bytes``; per-mask lists as numpy arrays
  (``mask/bbox`` and ``mask/crop_box`` shaped (N, 4), ``mask/point_coords``
  (P, 2)) and ``mask/counts`` / ``train/mask/counts`` as lists of bytes.
  Optional ``TRAIN_GROUPS`` are included when the record has them. Raises
  ``ExampleError`` naming ``where`` when a key is missing, a group is
  incomplete or lengths disagree.
  """
  try:
    ex = tf_example_pb2.Example.FromString(data)
  except Exception as e:  # protobuf's DecodeError has no stable import path
    raise ExampleError(f"{where}: not a tf.train.Example: {e}") from e
  fmap = ex.features.feature
  spec = dict(FEATURES)
  for key in FEATURES:
    if key not in fmap:
      raise ExampleError(f"{where}: missing feature {key!r}")
  for name, group in TRAIN_GROUPS.items():
    present = [k for k in group if k in fmap]
    if present and len(present) != len(group):
      raise ExampleError(f"{where}: optional group {name!r} is incomplete: has "
                         f"{present}, needs {sorted(group)}")
    if present:
      spec.update(group)
  out = {key: _values(fmap[key], kind) for key, (kind, _) in spec.items()}
  for key, (_, mult) in spec.items():
    if mult is None:
      if len(out[key]) != 1:
        raise ExampleError(f"{where}: {key!r} must hold one value, has {len(out[key])}")
      out[key] = out[key][0]
      if isinstance(out[key], np.integer):
        out[key] = int(out[key])
  n = len(out["mask/counts"])
  for key, (_, mult) in spec.items():
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

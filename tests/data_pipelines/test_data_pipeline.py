"""grain pipeline: fixed shapes, exact masks, sharding, state, bad records, global arrays."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tarfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from data_pipelines import (
  dataset_layout,
  decode,
  example_codec,
  global_batch,
  pipeline,
  rle,
  tfrecord,
)


def _cfg(data_dir, **kw):
  base = {"batch_size": 2, "image_size": 64, "gt_size": 32, "max_masks": 32,
          "read_threads": 1}
  base.update(kw)
  return pipeline.PipelineConfig(data_dir, **base)


def _source_meta(sample_dir):
  out = {}
  for name in sorted(os.listdir(sample_dir)):
    with tarfile.open(os.path.join(sample_dir, name)) as tf:
      for m in tf:
        if m.name.endswith(".json"):
          meta = json.loads(tf.extractfile(m).read())
          out[meta["image"]["image_id"]] = meta
  return out


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batches_have_fixed_shapes_exact_masks_and_drop_large_masks(sample_dir, converted_dir):
  cfg = _cfg(converted_dir, num_epochs=1, shuffle=False)
  metas = _source_meta(sample_dir)
  batches = list(pipeline.make_iterator(cfg))
  assert len(batches) == 5
  dropped_somewhere = vanished_somewhere = False
  for b in batches:
    assert b["image"].shape == (2, 64, 64, 3) and b["image"].dtype == np.uint8
    assert b["masks"].shape == (2, 32, 32, 32) and b["masks"].dtype == np.uint8
    assert b["boxes"].shape == (2, 32, 4) and b["points"].shape == (2, 32, 2)
    assert b["valid"].shape == (2, 32) and b["valid"].dtype == bool
    for j in range(2):
      meta = metas[int(b["image_id"][j])]
      h, w = meta["image"]["height"], meta["image"]["width"]
      assert tuple(b["original_size"][j]) == (h, w)
      rh, rw = decode.resized_shape(h, w, 64)
      gh, gw = decode.resized_shape(h, w, 32)
      assert tuple(b["image_size"][j]) == (rh, rw)
      assert not b["image"][j, rh:].any() and not b["image"][j, :, rw:].any()
      eligible = [a for a in meta["annotations"] if a["area"] <= 0.9 * h * w]
      dropped_somewhere |= len(eligible) < len(meta["annotations"])
      valid = b["valid"][j]
      # Independent path: full-resolution pycocotools decode, then sampling.
      full = mask_utils.decode([a["segmentation"] for a in eligible])
      want = full[rle.sample_grid(h, gh)][:, rle.sample_grid(w, gw)].transpose(2, 0, 1)
      visible = want.reshape(len(want), -1).any(-1)  # tiny masks vanish at G
      vanished_somewhere |= not visible.all()
      want, eligible = want[visible], [a for a, v in zip(eligible, visible) if v]
      assert valid.sum() == len(eligible) and valid[:len(eligible)].all()
      got = b["masks"][j, valid]
      assert not got[:, gh:].any() and not got[:, :, gw:].any()
      assert sorted(m.tobytes() for m in got[:, :gh, :gw]) == sorted(m.tobytes() for m in want)
      assert not b["masks"][j, ~valid].any() and not b["boxes"][j, ~valid].any()
      sx, sy = rw / w, rh / h
      want_boxes = sorted((a["bbox"][0] * sx, a["bbox"][1] * sy) for a in eligible)
      got_boxes = sorted(map(tuple, b["boxes"][j, valid, :2].astype(np.float64)))
      np.testing.assert_allclose(got_boxes, want_boxes, rtol=1e-5)
      assert (b["boxes"][j, valid, 2:] >= b["boxes"][j, valid, :2]).all()
      assert (b["points"][j, valid] <= (rw, rh)).all()
  assert dropped_somewhere, "sample should contain a >90% mask to exercise the drop"
  assert vanished_somewhere, "sample should contain a mask too small for G"


def test_sampling_k_masks_is_random(converted_dir):
  picks = []
  for seed in range(3):
    b = next(pipeline.make_iterator(_cfg(converted_dir, max_masks=3, seed=seed, shuffle=False)))
    assert b["masks"].shape[1:] == (3, 32, 32) and b["valid"].sum() >= 4
    np.testing.assert_array_equal(b["masks"].reshape(2, 3, -1).any(-1), b["valid"])
    picks.append(b["boxes"].tobytes())
  assert len(set(picks)) == 3


def test_decoded_image_matches_full_decode(converted_dir):
  src_path = os.path.join(converted_dir, dataset_layout.shard_name(0, 3))
  _, data = next(tfrecord.iter_frames(src_path))
  jpeg = example_codec.decode(data)["image/encoded"]
  reduced = decode.decode_image(jpeg, (40, 60), reduced=True)
  full = decode.decode_image(jpeg, (40, 60), reduced=False)
  assert reduced.shape == full.shape == (40, 60, 3)
  assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 12


def test_two_processes_read_disjoint_records_covering_the_dataset(converted_dir):
  seen = []
  for p in range(2):
    cfg = _cfg(converted_dir, batch_size=1, num_epochs=2, process_index=p, process_count=2)
    ids = [int(b["image_id"][0]) for b in pipeline.make_iterator(cfg)]
    assert len(ids) == 10
    seen.append((ids[:5], ids[5:]))
  for epoch in range(2):
    a, b = set(seen[0][epoch]), set(seen[1][epoch])
    assert not a & b and a | b == set(range(1, 11))
  assert seen[0][0] != seen[0][1]  # reshuffled each epoch


def _same(b1, b2):
  assert b1.keys() == b2.keys()
  for k in b1:
    np.testing.assert_array_equal(b1[k], b2[k], err_msg=k)


@pytest.mark.parametrize("workers", [0, 1])
def test_state_restore_gives_identical_next_batch(converted_dir, workers):
  cfg = _cfg(converted_dir, worker_count=workers, max_masks=4)
  it = pipeline.make_iterator(cfg)
  _take(it, 3)  # crosses the first epoch boundary (5 batches of 2 / epoch)
  state = it.get_state()
  want = _take(it, 4)
  if hasattr(it, "close"):
    it.close()
  it2 = pipeline.make_iterator(cfg)
  it2.set_state(json.loads(json.dumps(state)) if workers == 0 else state)
  for w, g in zip(want, _take(it2, 4)):
    _same(w, g)
  if hasattr(it2, "close"):
    it2.close()


def _damaged_copy(converted_dir, dst):
  """A one-shard dataset: 4 good records, a CRC failure, garbage, a bad JPEG."""
  recs = []
  for s in dataset_layout.load_manifest(converted_dir)["shards"]:
    recs += [d for _, d in tfrecord.iter_frames(os.path.join(converted_dir, s["file"]))]
  ex = example_codec.decode(recs[2])
  bad_jpeg = example_codec.encode(
      {"image_id": 99, "width": ex["image/width"], "height": ex["image/height"]},
      ex["image/encoded"][:200],
      [{"id": 1, "segmentation": {"size": [1, 1], "counts": "01"}, "bbox": [0, 0, 1, 1],
        "area": 1}])
  order = [recs[0], recs[1], recs[3], b"not an example", bad_jpeg, recs[4]]
  os.makedirs(dst)
  name = dataset_layout.shard_name(0, 1)
  path = os.path.join(dst, name)
  with tfrecord.TFRecordWriter(path) as w:
    for r in order:
      w.write(r)
    w.close()
  tfrecord.write_index(path + ".idx", w.index)
  data = bytearray(pathlib.Path(path).read_bytes())
  off = w.index[1][0]
  data[off + 30] ^= 0x55  # record 1 now fails its CRC
  pathlib.Path(path).write_bytes(bytes(data))
  manifest = dataset_layout.load_manifest(converted_dir)
  manifest["shards"] = [{"file": name, "index": name + ".idx", "num_records": len(order),
                         "num_masks": 0, "bytes": len(data), "sha256": ""}]
  pathlib.Path(dst, "manifest.json").write_text(json.dumps(manifest))


def test_bad_records_are_skipped_and_counted(converted_dir, tmp_path, caplog):
  dst = str(tmp_path / "damaged")
  _damaged_copy(converted_dir, dst)
  cfg = _cfg(dst, batch_size=1, num_epochs=1, shuffle=False)
  with caplog.at_level("WARNING"):
    batches = list(pipeline.make_iterator(cfg))
  assert len(batches) == 3
  assert sum(int(b["num_skipped"].sum()) for b in batches) == 3
  text = caplog.text
  assert "#1" in text and "CRC" in text
  assert "#3" in text and "#4" in text


def test_global_arrays_sharded_over_batch_axes(converted_dir):
  import jax
  from jax.sharding import AxisType, Mesh

  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"),
              axis_types=(AxisType.Auto,) * 2)
  cfg = _cfg(converted_dir, batch_size=4, max_masks=4)
  it = global_batch.make_global_iterator(cfg, mesh, ("data",))
  ref = pipeline.make_iterator(dataclasses.replace(cfg))
  g, local = next(it), next(ref)
  assert "num_skipped" not in g
  for k, arr in g.items():
    assert arr.shape == local[k].shape
    np.testing.assert_array_equal(np.asarray(arr), local[k])
    assert arr.sharding.spec[0] == "data"
    for shard in arr.addressable_shards:
      rows = shard.index[0]
      assert rows.stop - rows.start == 1
      np.testing.assert_array_equal(np.asarray(shard.data), local[k][rows])
  # two batch axes: dim 0 split 8 ways
  g2 = global_batch.to_global({"x": np.arange(8)}, mesh, ("data", "model"))
  assert {s.index[0].start for s in g2["x"].addressable_shards} == set(range(8))
  with pytest.raises(ValueError, match="fsdp"):
    global_batch.to_global({"x": np.arange(8)}, mesh, ("fsdp",))
  state = it.get_state()
  after = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(np.asarray(next(it)["image"]), np.asarray(after["image"]))


def test_missing_manifest_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="manifest.json"):
    pipeline.make_iterator(_cfg(str(tmp_path)))


def test_copy_of_converted_dir_reads_the_same(converted_dir, tmp_path):
  dst = tmp_path / "copy"
  shutil.copytree(converted_dir, dst)
  a = next(pipeline.make_iterator(_cfg(converted_dir)))
  b = next(pipeline.make_iterator(_cfg(str(dst))))
  _same(a, b)

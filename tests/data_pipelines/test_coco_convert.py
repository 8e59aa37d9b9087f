"""`samjax data convert --coco`: COCO instance JSON + images -> the SA-1B records."""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data_pipelines import cli as data_cli
from data_pipelines import (
  coco,
  dataset_layout,
  decode,
  example_codec,
  rle,
  sa1b_to_tfrecord,
  tfrecord,
  train_copy,
)

H, W = 64, 80
COPY = train_copy.TrainCopyConfig(image_size=64, gt_size=32, quality=95)
QUIET = {"progress": False, "log": lambda *_: None}


def _photo(seed, h=H, w=W):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
  return np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]


def _save(path, rgb, fmt, **kw):
  Image.fromarray(rgb).save(path, fmt, **kw)


def _disc(cy, cx, r):
  yy, xx = np.mgrid[:H, :W]
  return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _uncompressed(mask):
  """Column-major run lengths starting with background, as COCO writes them."""
  flat = np.asarray(mask, np.uint8).reshape(-1, order="F")
  change = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  runs = np.diff(bounds).tolist()
  return [0, *runs] if flat[0] else runs


def _compressed(mask):
  enc = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
  return {"size": [H, W], "counts": enc["counts"].decode("ascii")}


def _ann(aid, image_id, seg, cat=1, crowd=0):
  return {"id": aid, "image_id": image_id, "category_id": cat, "segmentation": seg,
          "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}


KEPT = (101, 102, 103, 104, 201, 202, 801)


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
  """A COCO JSON with every mask format and one problem of each kind."""
  d = tmp_path_factory.mktemp("coco")
  images = d / "images"
  (images / "sub").mkdir(parents=True)
  _save(images / "sub" / "a.jpg", _photo(1), "JPEG", quality=92)
  _save(images / "b.png", _photo(2), "PNG")
  _save(images / "d.jpg", _photo(4, h=60), "JPEG")            # 80x60, JSON says 80x64
  buf = io.BytesIO()
  _save(buf, _photo(5), "JPEG")
  (images / "e.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])  # truncated
  _save(images / "f.jpg", _photo(6), "JPEG")
  # Stored 64 wide x 80 high, EXIF "rotate 90": upright 80 x 64 as annotated.
  exif = Image.Exif()
  exif[0x0112] = 6
  _save(images / "r.jpg", _photo(8, h=W, w=H), "JPEG", exif=exif, quality=95)
  img = lambda i, name: {"id": i, "file_name": name, "width": W, "height": H}
  ring = _disc(30, 40, 20) & (1 - _disc(30, 40, 9))
  anns = [
      _ann(101, 1, [[5, 5, 30, 8, 25, 40, 8, 33]]),                       # polygon
      _ann(102, 1, [[40, 10, 70, 12, 66, 30], [60, 20, 78, 40, 55, 50, 50, 35.5]],
           cat=2),                                                        # two overlapping parts
      _ann(103, 1, {"size": [H, W], "counts": _uncompressed(ring)}),      # uncompressed RLE
      _ann(104, 1, _compressed(_disc(50, 20, 10)), cat=2),                # compressed RLE
      _ann(105, 1, {"size": [H, W], "counts": _uncompressed(_disc(10, 70, 6))}, crowd=1),
      _ann(106, 1, {"size": [H, W], "counts": [H * W]}),                  # empty mask
      _ann(107, 1, [[10, 10, 20, 20]]),                                   # 2-point polygon
      _ann(108, 1, [[1, 1, 9, 1, 9, 9]], cat=99),                         # unknown category
      _ann(109, 1, _compressed(_disc(5, 5, 3)) | {"size": [H, W + 1]}),    # RLE of another size
      _ann(201, 2, [[0, 0, 79, 0, 79, 63]]),
      _ann(202, 2, _compressed(_disc(40, 20, 12))),
      _ann(301, 3, [[5, 5, 30, 8, 25, 40]]),                              # image file missing
      _ann(401, 4, [[5, 5, 30, 8, 25, 40]]),                              # size mismatch
      _ann(501, 5, [[5, 5, 30, 8, 25, 40]]),                              # corrupt image
      _ann(601, 6, [[5, 5, 30, 8, 25, 40]], crowd=1),                     # crowd only
      _ann(801, 8, [[5, 5, 70, 5, 70, 20, 5, 20]]),                       # EXIF-rotated image
      _ann(901, 77, [[5, 5, 30, 8, 25, 40]]),                             # unknown image id
  ]
  data = {"images": [img(1, "sub/a.jpg"), img(2, "b.png"), img(3, "c.jpg"), img(4, "d.jpg"),
                     img(5, "e.jpg"), img(6, "f.jpg"), img(7, "f.jpg"), img(8, "r.jpg")],
          "annotations": anns,
          "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}]}
  path = d / "instances.json"
  path.write_text(json.dumps(data))
  return {"json": str(path), "images": str(images), "dir": d}


def _cli():
  parser = argparse.ArgumentParser()
  data_cli.register(parser.add_subparsers(dest="verb"))

  def run(*argv):
    args = parser.parse_args(list(argv))
    return args.func(args)

  return run


@pytest.fixture(scope="module")
def converted(coco_set, tmp_path_factory):
  """The set converted by the CLI (2 shards, S 64 / G 32 training copies); its
  stdout, and the records by mask id."""
  out = str(tmp_path_factory.mktemp("coco_out"))
  from contextlib import redirect_stdout
  buf = io.StringIO()
  with redirect_stdout(buf):
    rc = _cli()("data", "convert", "--coco", coco_set["json"], "--images", coco_set["images"],
                "--out", out, "--shards", "2", "--no-progress", "--train-size", "64",
                "--train-gt-size", "32")
  assert rc == 0, buf.getvalue()
  records = []
  m = dataset_layout.load_manifest(out)
  for s in m["shards"]:
    for _, data in tfrecord.iter_frames(os.path.join(out, s["file"])):
      records.append(data)
  return {"out": out, "stdout": buf.getvalue(), "manifest": m, "records": records}


def test_masks_equal_pycocotools_ann_to_mask(coco_set, converted):
  gt = COCO(coco_set["json"])
  seen = {}
  for data in converted["records"]:
    ex = example_codec.decode(data)
    h, w = ex["image/height"], ex["image/width"]
    runs = [rle.parse_counts(c) for c in ex["mask/counts"]]
    full = rle.decode_resized(runs, h, w, h, w)  # the pipeline's RLE decoder, at 1:1
    for j, aid in enumerate(ex["mask/id"].tolist()):
      ann = gt.anns[aid]
      want = gt.annToMask(ann)
      assert ex["image/id"] == ann["image_id"] and (h, w) == want.shape
      np.testing.assert_array_equal(full[j], want, err_msg=f"annotation {aid}")
      assert ex["mask/area"][j] == want.sum()
      x, y, bw, bh = ex["mask/bbox"][j]
      ys, xs = np.nonzero(want)
      assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
      px, py = ex["mask/point_coords"][j]
      assert ex["mask/num_points"][j] == 1 and want[int(py), int(px)] == 1
      assert ex["mask/predicted_iou"][j] == 1 and ex["mask/stability_score"][j] == 1
      np.testing.assert_array_equal(ex["mask/crop_box"][j], [0, 0, w, h])
      seen[aid] = (want, (int(px), int(py)))
    # Compressed RLE inputs are stored untouched.
    for j, aid in enumerate(ex["mask/id"].tolist()):
      seg = gt.anns[aid]["segmentation"]
      if isinstance(seg, dict) and isinstance(seg["counts"], str):
        assert ex["mask/counts"][j] == seg["counts"].encode()
    # Every stored image decodes at the annotated size, as stored.
    with Image.open(io.BytesIO(ex["image/encoded"])) as im:
      assert im.format == "JPEG" and im.size == (w, h)
  assert sorted(seen) == sorted(KEPT)
  # The point is the point protocol's first click (the clicker's rule).
  from samjax.evaluation.clicker import next_click
  for aid, (mask, point) in seen.items():
    c = next_click(mask.astype(bool), np.zeros_like(mask, bool))
    assert (c.x, c.y) == point, aid


def test_training_pipeline_reads_the_records(coco_set, converted):
  """decode_compact (stored G copies and originals alike) gives annToMask sampled at G."""
  gt = COCO(coco_set["json"])
  for use_copy in (True, False):
    cfg = decode.DecodeConfig(image_size=64, gt_size=32, max_masks=8, use_train_copy=use_copy)
    n = 0
    for data in converted["records"]:
      ex = example_codec.decode(data)
      got = decode.decode_compact(data, np.random.default_rng(0), cfg)
      h, w = ex["image/height"], ex["image/width"]
      gh, gw = decode.resized_shape(h, w, 32)
      rows, cols = rle.sample_grid(h, gh), rle.sample_grid(w, gw)
      want = {aid: gt.annToMask(gt.anns[aid])[rows][:, cols].tobytes()
              for aid in ex["mask/id"].tolist()}
      assert sorted(m.tobytes() for m in got["masks"]) == sorted(want.values())
      assert got["image"].shape[:2] == decode.resized_shape(h, w, 64)
      n += len(got["masks"])
    assert n == len(KEPT)


def test_bad_annotations_are_skipped_and_listed(coco_set, converted):
  m = converted["manifest"]
  by_kind = {}
  for s in m["skipped"]:
    assert set(s) == {"source", "member", "kind", "reason"} and s["reason"]
    assert s["source"] == coco_set["json"]
    by_kind.setdefault(s["kind"], []).append(s)
  want = {"crowd": 2, "empty_mask": 1, "degenerate_polygon": 1, "bad_category": 1,
          "rle_size": 1, "missing_image": 1, "size_mismatch": 1, "corrupt_image": 1,
          "unknown_image": 1, "no_annotations": 2}
  assert {k: len(v) for k, v in by_kind.items()} == want
  assert m["skipped_counts"] == dict(sorted(want.items()))
  reasons = {k: " | ".join(s["reason"] for s in v) for k, v in by_kind.items()}
  assert "annotation 105" in reasons["crowd"] and "annotation 601" in reasons["crowd"]
  assert "annotation 106" in reasons["empty_mask"]
  assert "annotation 107" in reasons["degenerate_polygon"]
  assert "2 point(s)" in reasons["degenerate_polygon"]
  assert "category_id 99" in reasons["bad_category"]
  assert "c.jpg" in reasons["missing_image"] and "not found" in reasons["missing_image"]
  assert "80x60" in reasons["size_mismatch"] and "80x64" in reasons["size_mismatch"]
  assert "image_id 77" in reasons["unknown_image"]
  assert {s["member"] for s in by_kind["no_annotations"]} == {"f.jpg"}  # images 6 and 7
  assert by_kind["empty_mask"][0]["member"] == "sub/a.jpg"
  # Records: images 1, 2 and 8; masks as kept.
  assert m["num_records"] == 3 and m["num_masks"] == len(KEPT)
  assert m["coco"]["masks_per_category"] == {"1": 5, "2": 2}
  assert [c["name"] for c in m["coco"]["categories"]] == ["thing", "stuff"]
  assert sorted(r["member"] for r in m["coco"]["reencoded"]) == ["b.png", "r.jpg"]
  # The CLI prints them as it prints SA-1B's.
  out = converted["stdout"]
  for kind in want:
    assert f": {kind}: " in out, kind
  assert f"  skipped {coco_set['json']}:sub/a.jpg: crowd: annotation 105" in out
  assert "re-encoded 2 image(s)" in out


def test_keep_crowd_and_rerun(coco_set, converted, tmp_path):
  # A rerun of the same inputs resumes: nothing rewritten, same manifest.
  out = converted["out"]
  manifest = pathlib.Path(out, "manifest.json")
  before = manifest.read_bytes()
  logs = []
  sa1b_to_tfrecord.convert(None, out, 2, copy=COPY, progress=False, log=logs.append,
                           coco_src=coco.Input(coco_set["json"], coco_set["images"]))
  assert "2 already finished, 0 to write" in logs[0]
  assert manifest.read_bytes() == before
  # Keeping crowd regions is another plan: it needs --overwrite, then has them.
  keep = coco.Input(coco_set["json"], coco_set["images"], keep_crowd=True)
  with pytest.raises(ValueError, match="--overwrite"):
    sa1b_to_tfrecord.convert(None, out, 2, copy=COPY, coco_src=keep, **QUIET)
  other = str(tmp_path / "keep")
  m = sa1b_to_tfrecord.convert(None, other, 1, copy=None, coco_src=keep, **QUIET)
  assert m["num_masks"] == len(KEPT) + 2 and "crowd" not in m["skipped_counts"]
  assert m["num_records"] == 4  # image 6 holds a crowd region only
  # Items go to spawned workers by pickle.
  items, _, _ = coco.scan(keep)
  assert pickle.loads(pickle.dumps(items)) == items


def test_converted_folder_passes_inspect(converted, capsys):
  assert _cli()("data", "inspect", converted["out"]) == 0
  report = capsys.readouterr().out
  assert "3 images, 7 masks" in report and report.rstrip().endswith("OK")


@pytest.mark.parametrize("content,message", [
    ('{"info": {}, "licenses": []}', "not a COCO instance file"),
    ('{"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]}',
     "annotations lack ['segmentation']"),
    ("{not json", "is not valid JSON"),
])
def test_not_coco_is_a_one_line_error(coco_set, tmp_path, capsys, content, message):
  bad = tmp_path / "bad.json"
  bad.write_text(content)
  rc = _cli()("data", "convert", "--coco", str(bad), "--images", coco_set["images"],
              "--out", str(tmp_path / "out"), "--shards", "1", "--no-progress")
  err = capsys.readouterr().err
  assert rc == 1 and message in err and err.count("\n") == 1, err
  assert err.startswith("samjax data convert: error: ")
  assert not (tmp_path / "out").exists()


def test_cli_argument_errors(coco_set, tmp_path, capsys):
  run = _cli()
  out = str(tmp_path / "out")
  assert run("data", "convert", "--coco", coco_set["json"], "--out", out, "--shards", "1") == 1
  assert "--coco needs --images" in capsys.readouterr().err
  assert run("data", "convert", "--src", coco_set["images"], "--images", coco_set["images"],
             "--out", out, "--shards", "1") == 1
  assert "go with --coco" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # argparse: --src and --coco are alternatives
    run("data", "convert", "--src", "x", "--coco", coco_set["json"], "--out", out,
        "--shards", "1")
  # No image with a usable annotation: an error naming the first problem.
  empty = tmp_path / "empty.json"
  empty.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4,
                                           "height": 4}], "annotations": []}))
  assert run("data", "convert", "--coco", str(empty), "--images", coco_set["images"],
             "--out", out, "--shards", "1") == 1
  assert "no image with usable annotations" in capsys.readouterr().err

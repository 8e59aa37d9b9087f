"""``samjax amg`` reading images from and writing labels to buckets (a real
fake-gcs-server and a real moto S3 server): killed with SIGKILL and resumed,
the bucket ends byte for byte equal to an uninterrupted local run."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from data_pipelines import atomic_io, storage
from samjax.cli import main
from tests.inference.amg_helpers import KILLING_RUNNER, SETTINGS

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(amg_images):
  """The fault tests' four small JPEGs."""
  return amg_images


def amg(checkpoint, images, out, *extra) -> int:
  return main(["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
               *SETTINGS, *extra])


@pytest.fixture(scope="module")
def reference(tiny_official_pth, images, tmp_path_factory):
  """Uninterrupted local runs: SA-1B with image copies, and the official layout."""
  root = tmp_path_factory.mktemp("ref")
  assert amg(tiny_official_pth, images, root / "sa1b", "--copy-images") == 0
  assert amg(tiny_official_pth, images, root / "official", "--output-format", "official") == 0
  return root


def upload(local_dir, prefix: str) -> str:
  for rel in storage.walk_files(str(local_dir)):
    atomic_io.copy_file(storage.join(str(local_dir), rel), storage.join(prefix, rel))
  return prefix


def assert_same_tree(remote: str, local) -> None:
  """Every object under ``remote`` equals the file under ``local``; nothing more."""
  want = storage.walk_files(str(local))
  assert storage.walk_files(remote) == want
  for rel in want:
    assert (storage.read_bytes(storage.join(remote, rel))
            == storage.read_bytes(storage.join(str(local), rel))), rel


def test_killed_and_resumed_on_gcs_equals_an_uninterrupted_local_run(
    gs_bucket, tiny_official_pth, images, reference, capsys):
  """kill -9 halfway through writing image 2's copy: on a bucket the half
  write is a local spool file that never becomes an object, so only image
  1's outputs are there; the resumed run does the other three."""
  src = upload(images, f"{gs_bucket}/images")
  out = f"{gs_bucket}/labels"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-c", KILLING_RUNNER, ".jpg", "2", "amg", "--checkpoint",
       tiny_official_pth, "--images", src, "--out", out, *SETTINGS, "--copy-images"],
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert storage.walk_files(out) == ["sa_1.jpg", "sa_1.json"]  # no temp object, no part
  capsys.readouterr()
  assert amg(tiny_official_pth, src, out, "--copy-images") == 0
  o = capsys.readouterr().out
  assert "3 image(s) labelled" in o and "1 already done" in o, o
  assert_same_tree(out, reference / "sa1b")
  assert amg(tiny_official_pth, src, out, "--copy-images") == 0
  assert "all 4 image(s) already done" in capsys.readouterr().out


def test_s3_input_and_outputs_with_a_damaged_label_redone(
    s3_bucket, tiny_official_pth, images, reference, capsys):
  src = upload(images, f"{s3_bucket}/images")
  out = f"{s3_bucket}/labels"
  # A label cut short by some copy tool: not trusted, redone.
  good = storage.read_bytes(str(reference / "sa1b" / "sa_3.json"))
  atomic_io.write_bytes(f"{out}/sa_3.json", good[:len(good) // 2])
  capsys.readouterr()
  assert amg(tiny_official_pth, src, out, "--copy-images") == 0
  o, e = capsys.readouterr()
  assert "4 image(s) labelled" in o and "1 redone" in o, o
  assert "redoing sa_3.jpg: sa_3.json is unreadable" in e, e
  assert_same_tree(out, reference / "sa1b")
  # The official layout (a PNG folder per image, metadata.csv last) too.
  official = f"{s3_bucket}/official"
  assert amg(tiny_official_pth, src, official, "--output-format", "official") == 0
  assert_same_tree(official, reference / "official")
  assert amg(tiny_official_pth, src, official, "--output-format", "official") == 0
  assert "all 4 image(s) already done" in capsys.readouterr().out


def test_segment_reads_and_writes_a_bucket(gs_bucket, tiny_official_pth, images, tmp_path):
  """`samjax segment` with the checkpoint, the image and both outputs in a
  bucket: the same bytes as a local run (the JSON names the checkpoint)."""
  ckpt, image = f"{gs_bucket}/ckpt/tiny.pth", f"{gs_bucket}/in/sa_2.jpg"
  atomic_io.copy_file(tiny_official_pth, ckpt)
  atomic_io.copy_file(str(images / "sa_2.jpg"), image)
  prompts = ["--point", "30,20", "--box", "5,5,50,40", "--multimask"]
  outs = {"local": (str(tmp_path / "o.png"), str(tmp_path / "o.json")),
          "gs": (f"{gs_bucket}/out/o.png", f"{gs_bucket}/out/o.json")}
  assert main(["segment", "--checkpoint", tiny_official_pth, "--image",
               str(images / "sa_2.jpg"), *prompts, "--out", outs["local"][0], "--json",
               outs["local"][1]]) == 0
  assert main(["segment", "--checkpoint", ckpt, "--image", image, *prompts, "--out",
               outs["gs"][0], "--json", outs["gs"][1]]) == 0
  assert storage.read_bytes(outs["gs"][0]) == storage.read_bytes(outs["local"][0])
  docs = {k: json.loads(storage.read_text(v[1])) for k, v in outs.items()}
  assert docs["gs"].pop("checkpoint") == ckpt
  docs["local"].pop("checkpoint")
  assert docs["gs"] == docs["local"]

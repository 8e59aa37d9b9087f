"""Models on buckets: ``samjax convert``, ``load_sam`` and the drop-in
registry on a real fake-gcs-server and a real moto S3 server, compared with
the same commands run on local disk.

Model directories hold orbax checkpoints: gs:// works, s3:// is refused in
one line (``storage.check_checkpoint_location``). ``.pth``, safetensors and
Hugging Face exports work on both.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from data_pipelines import atomic_io, storage
from samjax import formats, load_sam
from samjax.cli import main
from samjax.interop import staged_folder


def _leaves(params) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def assert_same_params(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert sorted(la) == sorted(lb)
  for k in la:
    assert la[k].dtype == lb[k].dtype and np.array_equal(la[k], lb[k]), k


def torch_tensors(path: str) -> dict:
  """A .pth's tensors, read the way samjax reads one (through the path layer)."""
  import torch
  with storage.local_copy(path) as local:
    return torch.load(local, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict):
  import torch
  assert list(a) == list(b)  # same keys, same (official) order
  for k in a:
    assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _staging_left(bucket_prefix: str) -> list[str]:
  return [n for n in storage.listdir(bucket_prefix) if ".tmp-" in n or ".old-" in n]


@pytest.fixture(scope="module")
def local(tiny_official_pth, tmp_path_factory):
  """The commands run on local disk: what every bucket run must equal."""
  d = tmp_path_factory.mktemp("local")
  paths = {"model": str(d / "model"), "pth": str(d / "model.pth"),
           "st": str(d / "model.safetensors")}
  assert main(["convert", "--from-torch", tiny_official_pth, "--out", paths["model"]]) == 0
  assert main(["convert", "--to-torch", paths["model"], "--out", paths["pth"]]) == 0
  assert main(["convert", "--to-torch", paths["model"], "--out", paths["st"],
               "--format", "safetensors"]) == 0
  paths["params"] = load_sam(paths["model"]).params
  return paths


def test_model_dir_export_and_load_on_gcs(gs_bucket, tiny_official_pth, local, capsys):
  src = f"{gs_bucket}/src/tiny.pth"
  atomic_io.copy_file(tiny_official_pth, src)
  model, pth = f"{gs_bucket}/model", f"{gs_bucket}/model.pth"
  assert main(["convert", "--from-torch", src, "--out", model]) == 0
  files = storage.walk_files(model)
  assert formats.MODEL_JSON in files and any(f.startswith("params/") for f in files)
  assert _staging_left(gs_bucket) == []
  assert main(["convert", "--to-torch", model, "--out", pth]) == 0
  # The export equals the local one tensor for tensor, and its sidecar too.
  assert_same_tensors(torch_tensors(pth), torch_tensors(local["pth"]))
  assert (json.loads(storage.read_text(formats.sidecar_path(pth)))
          == json.loads(storage.read_text(formats.sidecar_path(local["pth"]))))
  # load_sam of the bucket's model dir and .pth: the local model's params.
  assert_same_params(load_sam(model).params, local["params"])
  assert_same_params(load_sam(pth).params, local["params"])
  # The drop-in registry takes a bucket checkpoint too.
  from samjax.segment_anything import sam_model_registry
  sam = sam_model_registry["vit_tiny"](checkpoint=pth)
  assert_same_params(sam.loaded.params, local["params"])
  # No clobbering without --overwrite; with it, the model is replaced whole.
  capsys.readouterr()
  assert main(["convert", "--from-torch", src, "--out", model]) == 1
  assert "exists and is not empty" in capsys.readouterr().err
  assert main(["convert", "--to-torch", model, "--out", pth]) == 1
  assert "exists (pass --overwrite" in capsys.readouterr().err
  assert main(["convert", "--from-torch", src, "--out", model, "--overwrite"]) == 0
  assert_same_params(load_sam(model).params, local["params"])
  assert _staging_left(gs_bucket) == []


def test_an_interrupted_bucket_swap_loses_nothing_and_is_finished_by_a_rerun(
    gs_bucket, tiny_official_pth, local, capsys, monkeypatch):
  """A bucket has no rename: the old model is replaced object by object.
  Killed midway, the folder has no samjax_model.json (never loaded as a
  model) and the complete new model lies in the staging folder; a rerun
  with --overwrite finishes the job. A folder samjax did not write is
  never replaced."""
  model = f"{gs_bucket}/model"
  assert main(["convert", "--from-torch", tiny_official_pth, "--out", model]) == 0
  copies, real = [], storage.copy_object

  def dies_on_the_third_copy(src, dst):
    copies.append(dst)
    if len(copies) == 3:
      raise KeyboardInterrupt  # stands for a kill: no cleanup code may run after it
    real(src, dst)

  def write_the_same_model(staging):
    for rel in storage.walk_files(f"{model}/params"):  # not through copy_object
      atomic_io.copy_file(f"{model}/params/{rel}", f"{staging}/params/{rel}")
    atomic_io.copy_file(f"{model}/{formats.MODEL_JSON}", f"{staging}/{formats.MODEL_JSON}")

  monkeypatch.setattr(storage, "copy_object", dies_on_the_third_copy)
  with pytest.raises(KeyboardInterrupt):
    staged_folder.write_staged(model, formats.MODEL_JSON, write_the_same_model)
  monkeypatch.undo()
  assert not formats.is_model_dir(model)
  with pytest.raises(FileNotFoundError, match="is a directory but neither"):
    load_sam(model)
  stagings = _staging_left(gs_bucket)
  assert len(stagings) == 1 and storage.isfile(
      f"{gs_bucket}/{stagings[0]}/{formats.MODEL_JSON}")
  assert staged_folder.interrupted_swap(model, formats.MODEL_JSON)
  capsys.readouterr()
  assert main(["convert", "--from-torch", tiny_official_pth, "--out", model]) == 1
  assert "exists and is not empty" in capsys.readouterr().err
  assert main(["convert", "--from-torch", tiny_official_pth, "--out", model,
               "--overwrite"]) == 0
  assert_same_params(load_sam(model).params, local["params"])
  assert _staging_left(gs_bucket) == []  # the killed run's staging folder is gone too
  # Someone else's folder survives --overwrite.
  atomic_io.write_bytes(f"{gs_bucket}/photos/a.jpg", b"x")
  assert main(["convert", "--from-torch", tiny_official_pth, "--out",
               f"{gs_bucket}/photos", "--overwrite"]) == 1
  assert "not a samjax model directory" in capsys.readouterr().err
  assert storage.read_bytes(f"{gs_bucket}/photos/a.jpg") == b"x"


def test_exports_on_s3_and_model_dirs_refused_in_one_line(s3_bucket, tiny_official_pth,
                                                          local, capsys, tmp_path):
  # A model directory (orbax) on s3://: refused before anything is read or written.
  capsys.readouterr()
  assert main(["convert", "--from-torch", tiny_official_pth, "--out",
               f"{s3_bucket}/model"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "orbax" in err[0] and "s3://" in err[0], err
  assert storage.walk_files(s3_bucket) == []
  # One copied there by hand is refused the same way when loaded.
  for rel in storage.walk_files(local["model"]):
    atomic_io.copy_file(storage.join(local["model"], rel), f"{s3_bucket}/copied/{rel}")
  with pytest.raises(storage.UnsupportedStoreError, match="orbax"):
    load_sam(f"{s3_bucket}/copied")
  # .pth, safetensors and Hugging Face exports work, equal to the local ones.
  pth, st, hf = (f"{s3_bucket}/model.pth", f"{s3_bucket}/model.safetensors",
                 f"{s3_bucket}/hf")
  assert main(["convert", "--to-torch", local["model"], "--out", pth]) == 0
  assert_same_tensors(torch_tensors(pth), torch_tensors(local["pth"]))
  assert storage.isfile(formats.sidecar_path(pth))
  assert main(["convert", "--to-torch", local["model"], "--out", st, "--format",
               "safetensors"]) == 0
  assert storage.read_bytes(st) == storage.read_bytes(local["st"])
  assert main(["convert", "--to-hf", local["model"], "--out", hf]) == 0
  assert sorted(storage.listdir(hf)) == ["config.json", "model.safetensors",
                                         "samjax_export.json"]
  assert _staging_left(s3_bucket) == []
  # Each reads back as the same model.
  assert_same_params(load_sam(pth).params, local["params"])
  assert_same_params(load_sam(st).params, local["params"])
  back = str(tmp_path / "from_hf")
  assert main(["convert", "--from-hf", hf, "--out", back]) == 0
  assert_same_params(load_sam(back).params, local["params"])
  # An HF folder on a bucket is replaced only with --overwrite, then whole.
  assert main(["convert", "--to-hf", local["model"], "--out", hf]) == 1
  assert "exists and is not empty" in capsys.readouterr().err
  assert main(["convert", "--to-hf", pth, "--out", hf, "--overwrite"]) == 0
  assert _staging_left(s3_bucket) == []

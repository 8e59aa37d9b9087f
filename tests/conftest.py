"""Shared test setup: 8 fake CPU devices, full-precision matmuls, official-model fixtures."""

import os

# Must happen before jax is imported anywhere (sharding tests use 8 devices).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import atexit
import functools
import shutil
import tempfile

# One compilation cache for the whole session, inherited by the subprocesses
# the CLI tests start and by pytest-xdist's workers (they are started after
# this module ran in the controlling process, with its environment): the same
# train step is compiled once, not per run or per worker. jax locks the folder
# around reads and writes, so concurrent workers are safe. A fresh folder per
# session, so no test depends on an earlier session; the process that made it
# removes it.
if "SAMJAX_TEST_XLA_CACHE" not in os.environ:
  os.environ["SAMJAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="samjax-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["SAMJAX_TEST_XLA_CACHE"], ignore_errors=True)
os.environ["SAMJAX_COMPILATION_CACHE"] = os.environ["SAMJAX_TEST_XLA_CACHE"]

# Full-precision matmuls, set through the environment so that the CLI
# subprocesses inherit it: their programs then equal the in-process ones
# byte for byte and load from the shared compilation cache instead of
# compiling the train step again (~1.5 min each on a 2-core host).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# An installed libtpu (the plan extra) stays quiet on a host without a TPU,
# here and in the subprocesses tests start (`import samjax` sets nothing).
from samjax.hardware import quiet_libtpu_without_tpu

quiet_libtpu_without_tpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from samjax.compile_cache import enable_compile_cache  # noqa: E402

enable_compile_cache()


def randomize_official(sam, seed: int = 0):
  """Gives every official parameter a non-trivial random value.

  The official init leaves rel-pos tables, pos_embed, norms and biases at
  0/1, which would hide layout mistakes in exactly those tensors.
  """
  import torch
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in sam.named_parameters():
      if "rel_pos" in name or "pos_embed" in name:
        p.normal_(0.0, 0.5)
      elif p.ndim == 1 and name.endswith("weight"):
        p.add_(torch.randn_like(p) * 0.2)
      elif p.ndim == 1:
        p.normal_(0.0, 0.2)
  return sam


TRAINED_TINY = os.path.join(os.path.dirname(__file__), "data", "sam_tiny_trained_fp16.npz")


def trained_tiny_state_dict() -> dict:
  """The trained vit_tiny weights of tests/data (official keys), as float32."""
  with np.load(TRAINED_TINY) as f:
    return {k: f[k].astype(np.float32) for k in f.files}


@functools.lru_cache(maxsize=2)
def official_pair(variant: str, seed: int = 0):
  """(official torch Sam, samjax SamModel, samjax params) with identical weights."""
  import torch

  from samjax import build
  from samjax.interop import build_official_sam, params_from_state_dict
  model = build(variant)
  torch.manual_seed(seed)
  if variant in ("vit_b", "vit_l", "vit_h"):
    from segment_anything import sam_model_registry
    sam = sam_model_registry[variant](checkpoint=None).eval()
  else:
    sam = build_official_sam(model.config)
  randomize_official(sam, seed)
  sd = {k: v.numpy() for k, v in sam.state_dict().items()}
  return sam, model, params_from_state_dict(sd, model.config)


@pytest.fixture(scope="session")
def tiny_pair():
  return official_pair("vit_tiny")


@pytest.fixture(scope="session")
def tiny_official_pth(tmp_path_factory, tiny_pair):
  """Path of a vit_tiny official-layout .pth (seeded random weights) for CLI tests."""
  from samjax.interop.torch_io import save_state_dict
  sam = tiny_pair[0]
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, path)
  return path


@pytest.fixture(scope="session")
def vit_b_pair():
  return official_pair("vit_b")


@pytest.fixture
def rng():
  return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def amg_images(tmp_path_factory):
  """Four small JPEGs, ``<stem>.jpg`` for ``tests.inference.amg_helpers.STEMS``."""
  from tests.inference.amg_helpers import write_small_images
  d = tmp_path_factory.mktemp("amg_images")
  write_small_images(d)
  return d


@pytest.fixture(scope="session")
def amg_reference(tiny_official_pth, amg_images, tmp_path_factory):
  """An uninterrupted one-process `samjax amg --copy-images` of
  ``amg_images``: what every resumed or multi-process run must equal."""
  from samjax.cli import main
  from tests.inference.amg_helpers import SETTINGS, STEMS
  out = tmp_path_factory.mktemp("amg_ref") / "out"
  assert main(["amg", "--checkpoint", tiny_official_pth, "--images", str(amg_images),
               "--out", str(out), *SETTINGS, "--copy-images"]) == 0
  assert sorted(os.listdir(out)) == sorted(f"{s}.{e}" for s in STEMS for e in ("jpg", "json"))
  return out



def _serve(server_cm):
  """Starts a storage server for the session and points this process (and
  the CLI subprocesses it starts) at it."""
  with server_cm as server:
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
      yield server
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
  """A real fake-gcs-server on 127.0.0.1 (``tests/storage_servers.py``)."""
  from tests import storage_servers
  yield from _serve(storage_servers.gcs_server(str(tmp_path_factory.mktemp("gcs-root"))))


@pytest.fixture(scope="session")
def s3_server():
  """A real moto S3 server on 127.0.0.1 (``tests/storage_servers.py``)."""
  from tests import storage_servers
  yield from _serve(storage_servers.s3_server())


@pytest.fixture
def gs_bucket(gcs_server, request):
  """A fresh gs:// bucket for one test."""
  import uuid
  return gcs_server.bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_bucket(s3_server, request):
  """A fresh s3:// bucket for one test."""
  import uuid
  return s3_server.bucket(f"t-{uuid.uuid4().hex[:12]}")

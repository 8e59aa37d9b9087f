"""safetensors files as ``{key: float32 numpy array}``: the one place samjax
reads and writes them (official-layout exports, Hugging Face folders).

The ``safetensors`` package is imported when used, with a message saying how
to install it; no torch is needed except to widen bfloat16 tensors. Paths may be local,
``gs://`` or ``s3://``: ``safe_open`` needs a local file, so a remote one
is read from a downloaded temp copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from data_pipelines import atomic_io, storage


def require_safetensors():
  """The safetensors module, or an ImportError that says how to install it
  (called before a model loads, so a missing package costs no waiting)."""
  try:
    import safetensors
    import safetensors.numpy
  except ImportError as e:
    raise ImportError("safetensors files need the safetensors package: "
                      "pip install safetensors") from e
  return safetensors


def safetensors_bytes(tensors: Mapping[str, np.ndarray]) -> bytes:
  """A safetensors file (float32, ``{"format": "pt"}`` metadata, as torch writes)."""
  st = require_safetensors()
  arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()}
  return st.numpy.save(arrays, metadata={"format": "pt"})


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str) -> None:
  """Writes ``{key: array}`` as a safetensors file, atomically."""
  data = safetensors_bytes(tensors)
  storage.makedirs(storage.dirname(storage.resolve(path)))  # nothing to do on a bucket
  atomic_io.write_bytes(path, data)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """``{key: float32 array}`` of a safetensors file (fp16/bf16 are widened)."""
  st = require_safetensors()
  if not storage.isfile(path):
    raise FileNotFoundError(f"no such safetensors file: {path}")
  with storage.local_copy(path) as local:
    return _read_local(st, local, path)


def _read_local(st, local: str, path: str) -> dict[str, np.ndarray]:
  """``read_safetensors`` of the local file ``local`` (messages name ``path``)."""
  out = {}
  try:
    with st.safe_open(local, framework="np") as f:
      keys = list(f.keys())
      bf16 = []
      for k in keys:
        try:
          out[k] = np.asarray(f.get_tensor(k), np.float32)
        except TypeError:  # bfloat16: numpy has no such dtype
          bf16.append(k)
    if bf16:
      from samjax.extras import require
      require("torch", "torch",  # safe_open(framework="pt") needs it
              f"{path} holds bfloat16 tensors; reading them")
      with st.safe_open(local, framework="pt") as f:
        for k in bf16:
          out[k] = f.get_tensor(k).float().numpy()
  except (OSError, ValueError, RuntimeError) as e:
    raise ValueError(f"{path} is not a readable safetensors file: "
                     f"{type(e).__name__}: {e}") from None
  return out

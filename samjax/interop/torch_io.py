"""Reading and writing official ``.pth`` files (PyTorch is needed only here).

Paths may be local, ``gs://`` or ``s3://`` (``data_pipelines.storage``): a
remote file is read from a downloaded temp copy (torch reads zip archives by
seeking around, which would be many small range requests) and written as
one object when complete (``atomic_io``).

Never unpickles arbitrary objects: ``torch.load(..., weights_only=True)``.
Nor does it tell anyone to: torch's own error for a file holding other
objects advises retrying with ``weights_only=False`` (which runs whatever
code the file carries); that advice never reaches a samjax user.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from data_pipelines import atomic_io, storage

# Terminal colour codes torch puts in some messages.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Torch's name for what its restricted unpickler refused.
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REFUSED_OPERAND = re.compile(r"Unsupported operand (\d+)")


def _torch():
  """The torch module, or a one-line ``MissingExtraError`` naming the extra."""
  from samjax.extras import require
  return require("torch", "torch", "reading/writing .pth files")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """``{key: float array}`` from an official checkpoint (or a {'model': ...} wrapper).

  A ``.safetensors`` file (official keys, e.g. ``samjax convert --to-torch
  --format safetensors``) is read without torch and without pickle.
  """
  if path.endswith(".safetensors"):
    from samjax.interop.safetensors_io import read_safetensors
    return read_safetensors(path)
  torch = _torch()
  if not storage.isfile(path):
    raise FileNotFoundError(f"no such checkpoint file: {path}")
  try:
    with storage.local_copy(path) as local:
      obj = torch.load(local, map_location="cpu", weights_only=True)
  except storage.StorageError:
    raise
  except Exception as e:  # torch raises several types for non-checkpoints
    raise ValueError(describe_load_error(path, e)) from None
  for wrapper in ("model", "state_dict"):  # MAE / Lightning style wrappers
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  out = {}
  for k, v in obj.items():
    if not isinstance(v, torch.Tensor):
      raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    if v.dtype in (torch.bfloat16, torch.float16):
      v = v.float()
    out[str(k)] = v.detach().cpu().numpy()
  return out


def describe_load_error(path: str, e: Exception) -> str:
  """The message for a ``torch.load(weights_only=True)`` failure, without
  torch's advice to load with ``weights_only=False`` or to allow-list
  globals: both would execute or trust what an unknown file carries.

  ``raise ... from None`` by the caller too: a chained traceback (--debug)
  would show torch's original text.
  """
  text = _ANSI.sub("", str(e))
  # torch's restricted unpickler refused something (its wording since 2.4).
  if "Weights only load failed" in text or "WeightsUnpickler" in text:
    found = _REFUSED_GLOBAL.search(text)
    operand = _REFUSED_OPERAND.search(text)
    if found:
      what = f"it holds a pickled {found.group(1)} object, not only tensors"
    elif operand:
      what = (f"its pickle uses an operation torch's restricted loader refuses "
              f"(opcode {operand.group(1)}): Python objects other than tensors, or "
              "not a PyTorch file at all")
    else:
      what = "it holds pickled Python objects other than tensors"
    return (f"{path} is not a loadable PyTorch checkpoint of plain tensors: {what}. "
            "samjax loads .pth files with weights_only=True and never unpickles other "
            "objects, because unpickling can run arbitrary code; save just the "
            "state_dict of tensors (torch.save(model.state_dict(), path)) with software "
            "you trust")
  # Other failures (a truncated zip, an I/O error): torch's words are the
  # reason, minus any sentence suggesting the unsafe route.
  sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
  kept = " ".join(s for s in sentences if not _unsafe_advice(s))
  return (f"{path} is not a loadable PyTorch checkpoint: {type(e).__name__}: "
          f"{kept or 'unreadable'}")


def _unsafe_advice(sentence: str) -> bool:
  """Whether a sentence of torch's suggests disabling weights_only or trusting globals."""
  s = sentence.lower().replace("`", "")
  return ("weights_only" in s and "false" in s) or "safe_globals" in s


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes ``{key: array}`` as a torch state_dict, atomically (``atomic_io``:
  a kill leaves the old file or the new one, never a truncated one)."""
  torch = _torch()
  storage.makedirs(storage.dirname(storage.resolve(path)))  # nothing to do on a bucket
  # torch.from_numpy needs a writable array (restored checkpoints are read-only);
  # np.require copies only when an array is not already C-contiguous + writable.
  sd = {k: torch.from_numpy(np.require(v, requirements=("C", "W")))
        for k, v in state_dict.items()}
  with atomic_io.atomic_writer(path) as f:
    torch.save(sd, f)

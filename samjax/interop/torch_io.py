"""Reading and writing official ``.pth`` files (PyTorch is needed only here).

Never unpickles arbitrary objects: ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import numpy as np


def _torch():
  try:
    import torch
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "reading/writing .pth files needs PyTorch: pip install 'samjax[torch]' "
        "(or the 'test' extra)") from e
  return torch


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """``{key: float array}`` from an official checkpoint (or a {'model': ...} wrapper)."""
  torch = _torch()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such checkpoint file: {path}")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises several types for non-checkpoints
    raise ValueError(f"{path} is not a loadable PyTorch checkpoint "
                     f"(weights_only=True): {type(e).__name__}: {e}") from e
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


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes ``{key: array}`` as a torch state_dict, atomically (temp + rename)."""
  torch = _torch()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # torch.from_numpy needs a writable array (restored checkpoints are read-only);
  # np.require copies only when an array is not already C-contiguous + writable.
  sd = {k: torch.from_numpy(np.require(v, requirements=("C", "W")))
        for k, v in state_dict.items()}
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".pth.tmp")
  os.close(fd)
  try:
    torch.save(sd, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

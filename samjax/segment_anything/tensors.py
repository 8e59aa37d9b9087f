"""torch where the official API has torch, numpy where torch is not installed.

samjax computes in JAX and never needs torch; the drop-in namespace only
converts at its edges: inputs may be torch tensors, numpy or lists, outputs
are torch tensors when torch is importable (what official code calls
``.cpu().numpy()`` on), numpy otherwise.
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np


@functools.lru_cache(maxsize=1)
def torch_module():
  """The ``torch`` module, or None where it is not installed (imported on
  first use only, so ``import samjax`` never pulls it in)."""
  try:
    import torch
  except ImportError:
    return None
  return torch


def is_torch(x) -> bool:
  # A tensor exists only if torch was imported: checking must not import it.
  torch = sys.modules.get("torch")
  return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x, dtype=None) -> np.ndarray:
  """torch tensor (any device) / jax / numpy / nested lists -> numpy; None stays None."""
  if x is None:
    return None
  if is_torch(x):
    x = x.detach().cpu().numpy()
  return np.asarray(x, dtype)


def to_output(x, device=None):
  """numpy -> torch tensor on ``device`` when torch is installed, else numpy."""
  torch = torch_module()
  x = np.ascontiguousarray(x)
  if torch is None:
    return x
  if not x.flags.writeable:
    # Host copies of JAX arrays are read-only views; torch wants to own them.
    x = x.copy()
  t = torch.from_numpy(x)
  return t if device is None or torch.device(device).type == "cpu" else t.to(device)


def like(x: np.ndarray, ref):
  """``x`` as the same kind of array as ``ref`` (torch on its device, or numpy)."""
  if is_torch(ref):
    return to_output(x, ref.device)
  return x


def size_hw(size) -> tuple[int, int]:
  """(h, w) ints from a tuple, list, ``torch.Size`` or tensor."""
  h, w = (int(v) for v in to_numpy(size).reshape(-1)[:2])
  return h, w


def resolve_device(device):
  """What ``Sam.to(device)`` settles on: a ``torch.device`` torch can place
  tensors on (the model itself runs on JAX's backend whatever is asked), so
  notebooks written for ``"cuda"`` run on machines whose torch has no CUDA;
  without torch, the name as a string."""
  torch = torch_module()
  if torch is None:
    return str(device)
  d = torch.device(device)
  try:
    torch.empty(0, device=d)
  except (RuntimeError, AssertionError) as e:
    warnings.warn(f"torch cannot place tensors on {d} ({type(e).__name__}: {e}); "
                  "outputs stay on cpu (samjax runs the model on JAX's own device)",
                  stacklevel=3)
    return torch.device("cpu")
  return d

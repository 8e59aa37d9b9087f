"""Expensive session fixtures built once per test session, not once per
pytest-xdist worker.

A session-scoped fixture is per process, and `make test` runs two xdist
workers: the 2-minute reference training run would be paid twice. Whichever
worker asks first builds the fixture in a folder shared by the whole session
while holding a file lock; the others wait on the lock and read its result.
"""

from __future__ import annotations

import fcntl
import json
import os


def shared_root(tmp_path_factory):
  """The session's temporary folder, common to all xdist workers (each
  worker's own base folder is ``<session>/popen-gwN``)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _numpy_scalar(obj):
  if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
    return obj.item()  # numpy / jax scalars in metrics dicts
  raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def build_once(tmp_path_factory, name: str, build):
  """``build(folder)`` run once per session; returns its result.

  Args:
    name: the fixture's folder name (unique per fixture).
    build: makes the fixture inside ``folder`` (a ``str`` path, created
      empty) and returns a JSON-serialisable result; every caller gets the
      JSON round trip of it (tuples come back as lists).
  """
  root = shared_root(tmp_path_factory)
  folder = root / name
  result_file = root / f"{name}.result.json"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if result_file.exists():
      return json.loads(result_file.read_text())
    folder.mkdir(exist_ok=True)
    result = json.loads(json.dumps(build(str(folder)), default=_numpy_scalar))
    result_file.write_text(json.dumps(result))
    return result

"""Resumable per-image results of an evaluation run: one JSON line per image.

An evaluation over thousands of images must survive being killed: every
finished image is appended as one line and fsynced before the next image
starts, and a rerun with the same ``--out`` skips what is already there.

File layout (``<out>.images.jsonl``)::

    {"settings": {...}}                # line 1: the protocol's settings
    {"image": "<id>", ...}              # one line per finished image

A kill can only leave a partial *last* line (one ``write`` per line, the
file is opened for append): it is cut off when the log is opened again, so
that image is evaluated again. A log written with other settings is refused
(mixing two protocols' numbers in one table is the data loss this prevents),
as is a log whose earlier lines do not parse (corruption, not a crash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any


class PerImageLogError(ValueError):
  """The log on disk cannot be continued (other settings, corrupt lines)."""


def log_path_for(out_path: str) -> str:
  """Where the per-image log of the results file ``out_path`` lives."""
  root, ext = os.path.splitext(out_path)
  return (root if ext == ".json" else out_path) + ".images.jsonl"


def _canonical(obj: Any) -> Any:
  """JSON round trip: tuples become lists, so settings compare as stored."""
  return json.loads(json.dumps(obj, sort_keys=True))


class PerImageLog:
  """Append-only, crash-safe store of per-image results.

  Args:
    path: the ``.jsonl`` file (created with its folder if missing).
    settings: JSON-serialisable protocol settings; a log on disk must carry
      the same ones, or ``PerImageLogError`` is raised.
  """

  def __init__(self, path: str, settings: dict):
    self.path = path
    self.settings = _canonical(settings)
    self._records: dict[str, dict] = {}
    self._dropped_partial_line = False
    if os.path.exists(path):
      self._load()
    else:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      self._append_line({"settings": self.settings})

  @property
  def dropped_partial_line(self) -> bool:
    """True when opening cut off a half-written last line (a killed run)."""
    return self._dropped_partial_line

  def _load(self) -> None:
    with open(self.path, "rb") as f:
      data = f.read()
    lines = data.split(b"\n")
    # Everything after the last newline is a line the writer did not finish.
    complete, tail = lines[:-1], lines[-1]
    if tail:
      self._dropped_partial_line = True
      with open(self.path, "r+b") as f:
        f.truncate(len(data) - len(tail))
        f.flush()
        os.fsync(f.fileno())
    if not complete:
      # Killed before the header line was complete: start over.
      with open(self.path, "wb"):
        pass
      self._append_line({"settings": self.settings})
      return
    try:
      header = json.loads(complete[0])
    except json.JSONDecodeError as e:
      raise PerImageLogError(f"{self.path}: line 1 is not JSON ({e}); not a samjax "
                             "per-image log, or corrupt: move it away") from e
    if header.get("settings") != self.settings:
      raise PerImageLogError(
          f"{self.path} holds results made with other settings:\n"
          f"  on disk: {json.dumps(header.get('settings'), sort_keys=True)}\n"
          f"  now:     {json.dumps(self.settings, sort_keys=True)}\n"
          "use another --out, or delete the old results to start over")
    for number, line in enumerate(complete[1:], start=2):
      try:
        rec = json.loads(line)
        key = str(rec["image"])
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise PerImageLogError(f"{self.path}: line {number} is corrupt ({e}); "
                               "move the file away to start over") from e
      self._records[key] = rec

  def _append_line(self, obj: dict) -> None:
    line = (json.dumps(obj, sort_keys=True) + "\n").encode()
    # One write of the whole line on an O_APPEND descriptor, then fsync: a
    # crash leaves either the full line or a tail cut off at the next open.
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
      os.fsync(fd)
    finally:
      os.close(fd)

  def __contains__(self, image_id) -> bool:
    return str(image_id) in self._records

  def __len__(self) -> int:
    return len(self._records)

  def append(self, image_id, record: dict) -> None:
    """Stores one finished image (``record`` must be JSON-serialisable)."""
    key = str(image_id)
    if key in self._records:
      raise PerImageLogError(f"image {key} is already in {self.path}")
    rec = {"image": key, **_canonical(record)}
    self._append_line(rec)
    self._records[key] = rec

  def records(self) -> Iterator[dict]:
    """Finished images' records, in the order they were written."""
    return iter(self._records.values())

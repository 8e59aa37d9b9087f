"""The training metrics log: one JSON object per logged step, on disk or in a bucket.

Layouts (``samjax.formats``):

  local disk   ``W/metrics.jsonl``, appended and flushed at every record, so
               a killed run loses at most the record being written.
  gs:// s3://  ``W/metrics/<first step:012d>-<start ms:013d>.jsonl`` segment
               objects. Object stores cannot append (gcsfs's ``"a"`` rewrites
               the object), so each record rewrites its segment whole, as one
               atomic object (``atomic_io``): a killed run loses at most the
               record being uploaded. A segment holds at most
               ``SEGMENT_LINES`` records, so an upload stays small, and every
               process start begins a new one (no process rewrites another's).

``read_metrics`` reads either layout (both, if a workdir was copied between
them) in step order. ``remove_records`` drops the records a killed run logged
after its last checkpoint: the resumed run logs those steps again, so after a
kill and a resume every logged step appears exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from data_pipelines import atomic_io, storage
from samjax import formats

SEGMENT_LINES = 1000  # records per segment object: ~200 KB, one upload per record


def _segment_name(first_step: int) -> str:
  """Sorts by first step, then by start time: the order the records were written."""
  return f"{first_step:012d}-{int(time.time() * 1000):013d}.jsonl"


def _segment_first_step(name: str) -> int | None:
  head, _, rest = name.partition("-")
  return int(head) if head.isdigit() and rest.endswith(".jsonl") else None


class MetricsWriter:
  """Appends records to ``workdir``'s metrics log (local file or segments)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.remote = storage.is_remote(workdir)
    self._file = None             # local: metrics.jsonl, open for appending
    self._segment = None          # remote: the segment object being written
    self._lines: list[str] = []   # remote: every line of that segment
    self._dirty = False           # remote: lines not yet uploaded

  def write(self, record: dict) -> None:
    """Appends ``record`` and makes it durable before returning (remote: the
    segment upload is retried by ``storage``; what still fails raises, and the
    record stays queued for the next ``write``/``flush``)."""
    line = json.dumps(record) + "\n"
    if not self.remote:
      if self._file is None:
        storage.makedirs(self.workdir)
        # Append mode: the records of earlier runs (up to the restored step)
        # stay; remove_records already dropped newer ones and any torn line.
        path = storage.join(self.workdir, formats.METRICS)
        # Buckets cannot append: they take the segment branch below.
        self._file = storage.open_append(path)
      self._file.write(line)
      self._file.flush()
      return
    if self._segment is None or len(self._lines) >= SEGMENT_LINES:
      self.flush()  # the full segment is complete before the next one starts
      self._segment = storage.join(self.workdir, formats.METRICS_SEGMENTS,
                                   _segment_name(int(record["step"])))
      self._lines = []
    self._lines.append(line)
    self._dirty = True
    self.flush()

  def flush(self) -> None:
    """Remote: uploads the current segment whole if it changed since the last upload."""
    if self.remote and self._dirty:
      atomic_io.write_text(self._segment, "".join(self._lines))
      self._dirty = False

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    self.flush()


def _parse(text: str, where: str) -> tuple[list[dict], bool]:
  """(records, whether the text needs rewriting). Only the last line can be
  torn (a write cut short): dropped if it is not a whole record, kept but
  flagged if only its newline is missing (the next append would run into
  it). A bad line before the last is damage and raises."""
  lines = text.splitlines(keepends=True)
  out, rewrite = [], False
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not isinstance(record, dict):
      if i == len(lines) - 1:
        rewrite = True
        continue
      raise ValueError(f"{where} line {i + 1} is not a JSON record; the log is damaged")
    rewrite = rewrite or not line.endswith("\n")
    out.append(record)
  return out, rewrite


def _sources(workdir: str) -> list[str]:
  """The metrics files of ``workdir`` in write order: metrics.jsonl, then segments."""
  found = []
  jsonl = storage.join(workdir, formats.METRICS)
  if storage.isfile(jsonl):
    found.append(jsonl)
  folder = storage.join(workdir, formats.METRICS_SEGMENTS)
  if storage.isdir(folder):
    found += [storage.join(folder, n) for n in storage.listdir(folder)
              if _segment_first_step(n) is not None]
  return found


def read_metrics(workdir: str) -> list[dict]:
  """Every record of ``workdir``'s metrics log (either layout), sorted by step
  (records of one step keep the order they were written in)."""
  records = []
  for path in _sources(storage.resolve(workdir)):
    records += _parse(storage.read_text(path), path)[0]
  return sorted(records, key=lambda r: int(r["step"]))


def remove_records(workdir: str, stale: Callable[[dict], bool]) -> int:
  """Removes every record for which ``stale(record)`` is true (and a torn last
  line) from ``workdir``'s metrics log; returns how many records went.

  Each file or segment changes whole (atomically) or not at all; one that
  needs no change is not touched. Repeating the call after a crash in the
  middle finishes the job.
  """
  removed = 0
  for path in _sources(storage.resolve(workdir)):
    records, rewrite = _parse(storage.read_text(path), path)
    keep = [r for r in records if not stale(r)]
    removed += len(records) - len(keep)
    if len(keep) == len(records) and not rewrite:
      continue
    if not keep and storage.is_remote(path):
      storage.remove(path)  # an empty segment is no segment
    else:
      atomic_io.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
  return removed

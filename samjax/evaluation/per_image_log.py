"""Resumable per-image results of an evaluation run: one small file per image.

An evaluation over thousands of images must survive being killed: every
finished image is stored before the next image starts, and a rerun with the
same ``--out`` skips what is already there.

Layout (``<out>.images/``, a local folder or a bucket prefix; the same on
local disk, ``gs://`` and ``s3://``)::

    settings.json            {"settings": {...}}   written before any image
    image-<id>.json          {"image": "<id>", ...} one per finished image

(``<id>`` percent-encoded where it holds characters unsafe in a file name.)
Object stores cannot append to a file, so each image is its own file,
written whole by ``atomic_io``: locally a temp file renamed over the name,
on a bucket one object uploaded when complete. A kill therefore leaves
finished images' files and never a part of one; the image in flight has no
file and is evaluated again. ``settings.json`` is written first, so no image
file exists without it.

A log written with other settings is refused (mixing two protocols' numbers
in one table is the data loss this prevents), as is a file that does not
parse or names another image (whole-file writes cannot leave one: it is
damage, not a crash), and image files without ``settings.json``.

Several processes (``samjax eval`` on every host of a pod) share one log:
each writes the files of its own images only (``owns``), so two never write
the same name; ``settings.json`` may be written by several, with the same
bytes, each write whole. A temp file is removed only by the process that
owns its image in this run (another process may be writing the others at
that moment); process 0 sweeps the rest in ``refresh`` once every process
has finished.

Logs of samjax versions before this layout (``<out>.images.jsonl``, one JSON
line per image) are still read: their complete lines count as finished
images; new images go to the folder.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from data_pipelines import atomic_io, storage

SETTINGS = "settings.json"
_IMAGE_PREFIX, _IMAGE_SUFFIX = "image-", ".json"
# Temp files of a local write a kill cut short (``atomic_io.TEMP_MARKER``).
# Group 1: the image's (quoted) key; None for settings.json's.
_TEMP = re.compile(r"(?:settings|image-(.*))\.json" + re.escape(atomic_io.TEMP_MARKER)
                   + r"[0-9a-f]+")
# Remote image records fetched at once when a log is reopened.
_READ_THREADS = 16


class PerImageLogError(ValueError):
  """The log on disk cannot be continued (other settings, damaged files)."""


def log_path_for(out_path: str) -> str:
  """Where the per-image log of the results file ``out_path`` lives."""
  root, ext = storage.splitext(out_path)
  return (root if ext == ".json" else out_path) + ".images"


def legacy_log_path(log_path: str) -> str:
  """The one-file log older samjax versions kept for the same results."""
  return log_path + ".jsonl"


def image_file_name(image_id) -> str:
  """``image-<id>.json`` with the id percent-encoded (no ``/`` etc.)."""
  return _IMAGE_PREFIX + urllib.parse.quote(str(image_id), safe="") + _IMAGE_SUFFIX


def _key(file_name: str) -> str:
  """The image key of ``image-<id>.json`` (``image_file_name`` reversed)."""
  return urllib.parse.unquote(file_name[len(_IMAGE_PREFIX):-len(_IMAGE_SUFFIX)])


def _canonical(obj: Any) -> Any:
  """JSON round trip: tuples become lists, so settings compare as stored."""
  return json.loads(json.dumps(obj, sort_keys=True))


def _dumps(obj: dict) -> str:
  return json.dumps(obj, sort_keys=True)


class PerImageLog:
  """Crash-safe store of per-image results, local or in a bucket.

  Args:
    path: the log folder (``log_path_for``); created if missing.
    settings: JSON-serialisable protocol settings; a log on disk must carry
      the same ones, or ``PerImageLogError`` is raised.
    owns: image key (``str(image_id)``) -> whether this process writes that
      image, when several processes share the log: temp files of the other
      images (and of ``settings.json``) are left to their writers. None:
      this process is the only writer.
  """

  def __init__(self, path: str, settings: dict,
               owns: Callable[[str], bool] | None = None):
    self.path = storage.resolve(path)
    self.settings = _canonical(settings)
    self._owns = owns
    self._records: dict[str, dict] = {}
    if storage.isfile(self.path):
      raise PerImageLogError(f"{self.path} is a file, not a per-image log folder; "
                             "move it away")
    names = self._names()
    if SETTINGS in names:
      self._check_settings()
    elif any(n.startswith(_IMAGE_PREFIX) for n in names):
      raise PerImageLogError(f"{self.path} holds image results but no {SETTINGS}: "
                             "it is damaged; move it away to start over")
    self._read_legacy()
    if SETTINGS not in names:
      # Before any image: no image file ever exists without the settings.
      atomic_io.ensure_dir(self.path)
      atomic_io.write_text(storage.join(self.path, SETTINGS),
                           _dumps({"settings": self.settings}) + "\n")
    self._load([n for n in names if n.startswith(_IMAGE_PREFIX)
                and n.endswith(_IMAGE_SUFFIX)])
    self._remove_temp_files(names)

  def _names(self) -> list[str]:
    try:
      return storage.listdir(self.path)
    except FileNotFoundError:  # a new log (on a bucket: no object yet)
      return []

  def _settings_mismatch(self, where: str, found) -> PerImageLogError:
    return PerImageLogError(
        f"{where} holds results made with other settings:\n"
        f"  on disk: {json.dumps(found, sort_keys=True)}\n"
        f"  now:     {json.dumps(self.settings, sort_keys=True)}\n"
        "use another --out, or delete the old results to start over")

  def _check_settings(self) -> None:
    where = storage.join(self.path, SETTINGS)
    try:
      found = json.loads(storage.read_bytes(where))["settings"]
    except (ValueError, KeyError, TypeError) as e:
      raise PerImageLogError(f"{where} is not a samjax per-image log header ({e}); "
                             "move the log away to start over") from e
    if found != self.settings:
      raise self._settings_mismatch(self.path, found)

  def _load(self, names: list[str]) -> None:
    """Reads every finished image's file (a bucket's in parallel: each is
    one request)."""
    paths = [storage.join(self.path, n) for n in sorted(names)]
    if storage.is_remote(self.path) and len(paths) > 1:
      with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
        contents = list(pool.map(storage.read_bytes, paths))
    else:
      contents = [storage.read_bytes(p) for p in paths]
    for name, path, data in zip(sorted(names), paths, contents):
      key = _key(name)
      try:
        rec = json.loads(data)
        found = str(rec["image"])
      except (ValueError, KeyError, TypeError) as e:
        raise PerImageLogError(f"{path} is damaged ({type(e).__name__}: {e}); move it "
                               "away to evaluate that image again") from e
      if found != key:
        raise PerImageLogError(f"{path} holds image {found!r}, not {key!r}: the log "
                               "is damaged; move the file away")
      self._records.setdefault(key, rec)

  def _read_legacy(self) -> None:
    """Finished images of an older samjax's ``<log>.jsonl`` (read only)."""
    legacy = legacy_log_path(self.path)
    try:
      data = storage.read_bytes(legacy)
    except FileNotFoundError:
      return
    # Everything after the last newline is a line the old writer did not finish.
    lines = data.split(b"\n")[:-1]
    if not lines:
      return
    try:
      found = json.loads(lines[0])["settings"]
    except (ValueError, KeyError, TypeError) as e:
      raise PerImageLogError(f"{legacy}: line 1 is not a per-image log header ({e}); "
                             "move it away") from e
    if found != self.settings:
      raise self._settings_mismatch(legacy, found)
    for number, line in enumerate(lines[1:], start=2):
      try:
        rec = json.loads(line)
        key = str(rec["image"])
      except (ValueError, KeyError, TypeError) as e:
        raise PerImageLogError(f"{legacy}: line {number} is corrupt ({e}); "
                               "move the file away to start over") from e
      self._records[key] = rec

  def _remove_temp_files(self, names: list[str]) -> None:
    """Temp files of local writes a kill cut short (never complete data);
    with ``owns``, only those of this process's images."""
    for n in names:
      m = _TEMP.fullmatch(n)
      if not m:
        continue
      quoted = m.group(1)  # None: a settings.json temp file
      if self._owns is not None and (quoted is None
                                     or not self._owns(urllib.parse.unquote(quoted))):
        continue
      storage.remove(storage.join(self.path, n))  # gone already: fine

  def refresh(self) -> None:
    """Reads the images other processes have added since this log opened,
    and removes every temp file left (call it once all writers finished)."""
    names = self._names()
    self._load([n for n in names if n.startswith(_IMAGE_PREFIX) and n.endswith(_IMAGE_SUFFIX)
                and _key(n) not in self._records])
    self._owns = None
    self._remove_temp_files(names)

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
    atomic_io.write_text(storage.join(self.path, image_file_name(key)), _dumps(rec) + "\n")
    self._records[key] = rec

  def records(self) -> Iterator[dict]:
    """Finished images' records: those found on opening (legacy log first,
    then by file name), then this run's in the order they were added."""
    return iter(self._records.values())


def read_records(path: str) -> list[dict]:
  """The finished images' records of the log folder ``path``, by file name,
  without checking settings (for reports and tests; a run resumes through
  ``PerImageLog``)."""
  try:
    names = storage.listdir(path)
  except FileNotFoundError:
    return []
  return [json.loads(storage.read_bytes(storage.join(path, n))) for n in names
          if n.startswith(_IMAGE_PREFIX) and n.endswith(_IMAGE_SUFFIX)]

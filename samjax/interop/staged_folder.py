"""Output folders written whole: model directories and Hugging Face exports.

A folder of several files cannot be replaced in one step, so it is written
into a sibling staging folder ``.<name>.tmp-<hex>`` and only then put in
place. Each kind of folder has a *marker*: the file samjax writes last and
that says "samjax wrote this, and it is complete" (``samjax_model.json``,
``samjax_export.json``).

* Local disk: two renames (old aside, staging in), then the old one is
  deleted; a kill leaves the old folder or the new one, never a part.
* ``gs://`` / ``s3://`` have no rename. The staging folder is complete
  (marker included) before anything of the old folder is touched; then the
  old marker is deleted first (from that moment samjax no longer takes the
  folder for a finished one), the old objects are deleted, the new ones
  copied in (server-side) and the marker copied last. A kill during that
  leaves a folder without its marker *and* the complete staging copy beside
  it: nothing is lost, and a rerun with ``--overwrite`` recognises the
  interrupted swap (``interrupted_swap``) and finishes the job.

``--overwrite`` replaces only a folder holding the marker, or one whose
interrupted swap is recognised, and only once the new folder is complete.
Staging folders a killed earlier run left are deleted after a successful
write (the name pattern is samjax's own).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from data_pipelines import atomic_io, storage

_STAGING = ".{name}.tmp-"
_STAGING_RE = r"\.{name}\.tmp-[0-9a-f]+"


def _stagings(directory: str) -> list[str]:
  """This folder's staging siblings (any run's), by the name pattern."""
  parent, name = storage.dirname(directory), storage.basename(directory)
  pattern = re.compile(_STAGING_RE.format(name=re.escape(name)))
  try:
    names = storage.listdir(parent)
  except FileNotFoundError:
    return []
  return [storage.join(parent, n) for n in names if pattern.fullmatch(n)]


def interrupted_swap(directory: str, marker: str) -> bool:
  """Whether a bucket swap into ``directory`` was cut short: the folder has
  no marker but a complete staging copy (marker included) lies beside it."""
  return any(storage.isfile(storage.join(s, marker)) for s in _stagings(directory))


def is_nonempty(directory: str) -> bool:
  """Local: a folder with entries (or a file). Remote: any object under the prefix."""
  if storage.isfile(directory):
    return True
  return storage.isdir(directory) and bool(storage.listdir(directory))


def check_target(directory: str, marker: str, overwrite: bool, kind: str) -> None:
  """Refuses (``FileExistsError``, one line) an output folder that must not
  be written: a file; a non-empty folder without ``overwrite``; one with
  ``overwrite`` that samjax did not write (no ``marker``, no interrupted
  swap). ``kind`` names the folder kind in the message."""
  if storage.isfile(directory):
    raise FileExistsError(f"{directory} is a file; a {kind} is a folder")
  if not is_nonempty(directory):
    return
  if not overwrite:
    raise FileExistsError(f"{directory} exists and is not empty "
                          "(pass --overwrite / overwrite=True to replace it)")
  if not (storage.isfile(storage.join(directory, marker))
          or interrupted_swap(directory, marker)):
    raise FileExistsError(f"{directory} is not a {kind} samjax wrote (no {marker}); "
                          "--overwrite only replaces those")


def write_staged(directory: str, marker: str, write: Callable[[str], None]) -> None:
  """Calls ``write(staging)`` to fill a staging folder (it must write
  ``marker`` last), then puts it in place of ``directory`` (see the module
  docstring). An error inside ``write`` removes the staging folder and
  leaves ``directory`` untouched."""
  directory = storage.resolve(directory)
  parent, name = storage.dirname(directory), storage.basename(directory)
  tag = secrets.token_hex(4)
  staging = storage.join(parent, _STAGING.format(name=name) + tag)
  stale = _stagings(directory)
  storage.makedirs(staging)
  try:
    write(staging)
    if not storage.isfile(storage.join(staging, marker)):
      raise AssertionError(f"{staging}: {marker} was not written")
  except BaseException:
    storage.rmtree(staging)
    raise
  if storage.is_remote(directory):
    _swap_remote(staging, directory, marker)
  else:
    _swap_local(staging, directory, storage.join(parent, f".{name}.old-{tag}"))
  for leftover in stale:  # killed earlier runs' staging folders
    storage.rmtree(leftover)


def _swap_local(staging: str, directory: str, aside: str) -> None:
  """Old folder to ``aside``, staging in (two renames), then the old one deleted."""
  had_old = storage.exists(directory)
  if had_old:
    storage.move_tree(directory, aside)
  storage.move_tree(staging, directory)
  atomic_io.fsync_directory(storage.dirname(directory))
  if had_old:
    storage.rmtree(aside)


def _swap_remote(staging: str, directory: str, marker: str) -> None:
  """Marker out first, old objects out, new objects in, marker in last."""
  storage.remove(storage.join(directory, marker))
  storage.rmtree(directory)
  files = storage.walk_files(staging)
  for rel in files:
    if rel != marker:
      storage.copy_object(storage.join(staging, rel), storage.join(directory, rel))
  storage.copy_object(storage.join(staging, marker), storage.join(directory, marker))
  storage.rmtree(staging)

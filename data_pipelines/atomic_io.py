"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The project's helper for writing a file whole-or-not-at-all, meant as the
single place crash-safety work builds on (used for every file ``samjax data
convert`` writes: shards streamed through ``atomic_writer``, their indices,
done/plan/manifest JSONs; ``samjax data make-sample``'s tars; ``samjax amg``'s
per-image JSONs, image copies and overlays; ``samjax segment``'s outputs;
exported ``.pth`` files). Each write goes to a temp file in the target's
directory (so the rename cannot cross filesystems), is flushed and fsynced, renamed
over the target with ``os.replace``, and the directory is fsynced, so after a
crash the path holds either its old content or the complete new one. On an
error the temp file is removed and the old file is left untouched.

New files get the permissions a plain ``open(path, "w")`` would give (0666
minus the umask), not ``tempfile.mkstemp``'s 0600, so outputs stay readable
by whoever could read them before.

On ``gs://`` and ``s3://`` (``storage``) there is no rename, but a single
object write is atomic: the block writes into a local temp file, and only a
block that finished uploads it as one object, so readers again see the old
object or the whole new one. ``ensure_dir`` checks that the bucket exists.

Temp names are ``<name>.tmp-<random>`` (``TEMP_MARKER``): a run killed mid-write
leaves one behind, which a later run may delete by that marker.

``ensure_dir`` creates an output folder and checks it can take new files up
front, so an unwritable ``--out`` is one clear error naming the folder rather
than a failure on some temp file deep inside a run.

Lives in ``data_pipelines`` rather than ``samjax`` because ``import samjax``
loads jax and the model, and the converter's spawned worker processes write
through this module; ``samjax`` already depends on ``data_pipelines``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from data_pipelines import storage

TEMP_MARKER = ".tmp-"


def _create_temp(path: str) -> tuple[int, str]:
  """A new, empty temp file beside ``path``: (fd, temp path).

  ``O_EXCL`` with mode 0o666 instead of ``mkstemp``: the kernel applies the
  umask (and any default ACL) exactly as for an ordinary new file.
  """
  directory, name = os.path.split(os.path.abspath(path))
  flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
  while True:
    tmp = os.path.join(directory, f"{name}{TEMP_MARKER}{secrets.token_hex(4)}")
    try:
      return os.open(tmp, flags, 0o666), tmp
    except FileExistsError:  # vanishingly rare: draw another name
      continue


def fsync_directory(directory: str) -> None:
  """Makes a rename inside ``directory`` durable (a no-op where unsupported)."""
  try:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  except OSError:  # e.g. Windows cannot open a directory
    return
  try:
    os.fsync(fd)
  except OSError as e:
    # Some filesystems cannot sync a directory; the rename stands anyway.
    if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
      raise
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb",
                  encoding: str | None = None) -> Iterator[IO[Any]]:
  """``with atomic_writer(path, "w") as f: f.write(...)``: replaces ``path``
  atomically when the block finishes; an exception in it leaves ``path`` as it
  was (and no temp file).

  Args:
    mode: ``"wb"`` (bytes) or ``"w"`` (text).
    encoding: text mode only; default UTF-8.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  path = os.fspath(path)
  if mode == "w" and encoding is None:
    encoding = "utf-8"
  if storage.is_remote(path):
    with _remote_writer(path, mode, encoding) as f:
      yield f
    return
  fd, tmp = _create_temp(path)
  try:
    try:
      f = os.fdopen(fd, mode, encoding=encoding)
    except BaseException:
      os.close(fd)
      raise
    with f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  fsync_directory(os.path.dirname(os.path.abspath(path)))


SPOOL_PREFIX = "samjax-upload-"  # + "<pid>-": local spools of uploads in progress


_swept_in_pid = None


def _remove_orphaned_spools() -> None:
  """Deletes the upload spools of processes that no longer exist (once per
  process): a writer killed mid-upload (kill -9) leaves its spool, up to a
  whole shard, in the temp folder, and a TPU VM's boot disk is small."""
  global _swept_in_pid
  if _swept_in_pid == os.getpid():
    return
  _swept_in_pid = os.getpid()
  folder = tempfile.gettempdir()
  with contextlib.suppress(OSError):
    for name in os.listdir(folder):
      pid = name[len(SPOOL_PREFIX):].split("-", 1)[0]
      if not (name.startswith(SPOOL_PREFIX) and pid.isdigit()):
        continue
      try:
        os.kill(int(pid), 0)
      except ProcessLookupError:  # its writer is gone
        with contextlib.suppress(OSError):
          os.remove(os.path.join(folder, name))
      except PermissionError:  # another user's live process
        pass


@contextlib.contextmanager
def _remote_writer(path: str, mode: str, encoding: str | None) -> Iterator[IO[Any]]:
  """Object-store half of ``atomic_writer``: a local spool, uploaded as one
  object only when the block finished."""
  _remove_orphaned_spools()
  with tempfile.NamedTemporaryFile(prefix=f"{SPOOL_PREFIX}{os.getpid()}-") as spool:
    with open(spool.name, mode, encoding=encoding) as f:
      yield f
    fs = storage.filesystem(path)
    target = path.split("://", 1)[1]
    storage.retrying(lambda: fs.put_file(spool.name, target), f"upload {path}")


def ensure_dir(path: str | os.PathLike) -> None:
  """Creates folder ``path`` (and its parents) and checks that files can be
  created in it.

  Raises:
    OSError: ``NotADirectoryError`` when ``path`` (or a parent) is a file,
      ``PermissionError`` when the folder cannot be created or written; the
      error's ``filename`` is ``path`` and its ``strerror`` says why in words.
  """
  path = os.fspath(path)
  if storage.is_remote(path):
    bucket = path.split("://", 1)[1].split("/", 1)[0]
    root = f"{storage.scheme(path)}://{bucket}"
    if not storage.retrying(lambda: storage.filesystem(path).exists(bucket),
                            f"look up bucket {root}"):
      raise FileNotFoundError(errno.ENOENT, "no such bucket (or no access to it)", root)
    return
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError as e:  # makedirs' answer when a file sits at ``path``
    raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", path) from e
  except OSError as e:
    raise type(e)(e.errno, f"cannot create the folder: {e.strerror}", path) from e
  # access() consults the permission bits, ACLs and read-only mounts; root
  # passes it wherever root can actually write.
  if not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(errno.EACCES, "folder is not writable", path)


def check_output_file(path: str, flag: str) -> None:
  """A command's output file flag (``--out``, ``--json``) must name a file
  whose folder (or bucket) can take it: checked, and the folder made, before
  any long work. Raises ValueError ``"<flag> <path>: <why>"``."""
  if storage.isdir(path):
    raise ValueError(f"{flag} {path}: is a folder; give a file name inside it")
  try:
    ensure_dir(storage.dirname(storage.resolve(path)))
  except OSError as e:
    raise ValueError(f"{flag} {path}: {e.strerror or e}") from e


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Atomically replaces ``path`` with ``data``."""
  with atomic_writer(path, "wb") as f:
    f.write(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
  """Atomically replaces ``path`` with ``text``."""
  with atomic_writer(path, "w", encoding=encoding) as f:
    f.write(text)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Atomically replaces ``dst`` with a copy of ``src``'s bytes (not its
  metadata): a copy cut short by a crash never appears under ``dst``."""
  with storage.open_read(src, "rb") as fin, atomic_writer(dst, "wb") as fout:
    shutil.copyfileobj(fin, fout, 1 << 20)


def write_json(path: str | os.PathLike, obj, *, end: str = "", **dump_kwargs) -> None:
  """Atomically replaces ``path`` with ``json.dumps(obj, **dump_kwargs) + end``.

  The document is serialised before the temp file is created, so an object
  JSON cannot encode fails without touching the disk.
  """
  write_text(path, json.dumps(obj, **dump_kwargs) + end)

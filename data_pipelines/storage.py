"""One path layer for local files, Google Cloud Storage (``gs://``) and S3 (``s3://``).

Every samjax command and Python API that takes a path goes through this
module (reads, listings, folders, moves) or through ``atomic_io`` (writes),
so a TPU pod can keep its data, checkpoints and logs in a bucket. No other
module calls ``os.path``, ``open`` or ``shutil`` on a user's path
(``tests/structure/test_path_layer.py`` checks it).

* Local paths behave exactly as before: ``os`` and ``open``.
* ``gs://`` and ``s3://`` go through fsspec (``gcsfs`` / ``s3fs``, the
  ``cloud`` extra). Object stores have no folders, no append and no rename;
  what each guarantee rests on there is written where it is kept
  (``atomic_io``: one object per write, uploaded whole; checkpoints: orbax's
  commit files; logs: ``samjax.train.logging_utils``).

Credentials and endpoints come from the clients' own settings, nothing of
samjax's: Application Default Credentials (or anonymous access on an
emulator) for GCS, ``STORAGE_EMULATOR_HOST`` for a GCS emulator,
``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_DEFAULT_REGION`` for S3. The one mapping between clients lives in
``configure_clients``: orbax writes arrays through tensorstore, which reads
``TENSORSTORE_GCS_HTTP_URL`` rather than ``STORAGE_EMULATOR_HOST``, so an
emulator set for gcsfs is handed to tensorstore too (unless set already).

Requests to an object store take tens of milliseconds and sometimes fail
transiently (HTTP 429/5xx, timeouts, dropped connections): ``read_range``
and the other remote calls retry those with exponential backoff
(``RETRIES`` attempts) and then raise ``StorageError`` naming the object.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

REMOTE_SCHEMES = ("gs", "s3")
RETRIES = 6               # attempts per remote call before StorageError
RETRY_BASE_SECONDS = 0.2  # first backoff; doubles per attempt (0.2 .. 6.4 s)

T = TypeVar("T")


class StorageError(OSError):
  """A remote call that still failed after ``RETRIES`` attempts."""


class UnsupportedStoreError(ValueError):
  """A path on a store that this part of samjax cannot use (one line, says why)."""


# --- what a path is --------------------------------------------------------------------

def scheme(path: str | os.PathLike) -> str:
  """``"gs"``, ``"s3"`` or ``""`` (local)."""
  path = os.fspath(path)
  head, sep, _ = path.partition("://")
  if not sep:
    return ""
  if head not in REMOTE_SCHEMES:
    raise UnsupportedStoreError(f"{path}: unknown storage scheme {head}://; "
                                f"samjax reads local paths, gs:// and s3://")
  return head


def is_remote(path: str | os.PathLike) -> bool:
  return scheme(path) != ""


def resolve(path: str | os.PathLike) -> str:
  """An absolute local path, or a bucket URL without a trailing slash."""
  path = os.fspath(path)
  if is_remote(path):
    return path.rstrip("/")
  return os.path.abspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
  base = os.fspath(base)
  if is_remote(base):
    return posixpath.join(base, *parts)
  return os.path.join(base, *parts)


def dirname(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if is_remote(path):
    return posixpath.dirname(path.rstrip("/"))
  return os.path.dirname(path)


def basename(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if is_remote(path):
    return posixpath.basename(path.rstrip("/"))
  return os.path.basename(path)


def splitext(path: str | os.PathLike) -> tuple[str, str]:
  path = os.fspath(path)
  return posixpath.splitext(path) if is_remote(path) else os.path.splitext(path)


# --- clients ---------------------------------------------------------------------------

def configure_clients() -> None:
  """Hands the GCS emulator set for gcsfs (``STORAGE_EMULATOR_HOST``) to
  tensorstore (``TENSORSTORE_GCS_HTTP_URL``), which orbax writes arrays
  through; without it tensorstore would try the real GCS and time out. An
  explicit ``TENSORSTORE_GCS_HTTP_URL`` wins."""
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator and "TENSORSTORE_GCS_HTTP_URL" not in os.environ:
    if "://" not in emulator:
      emulator = "http://" + emulator
    os.environ["TENSORSTORE_GCS_HTTP_URL"] = emulator


@functools.cache
def _filesystem(kind: str, pid: int):
  """One fsspec filesystem per scheme and process (clients do not survive a
  fork: a forked grain worker builds its own). Listings are not cached:
  another host (or process) may have written since."""
  del pid  # part of the cache key only
  if kind == "gs":
    try:
      import gcsfs
    except ImportError as e:
      raise UnsupportedStoreError(
          "gs:// paths need gcsfs: pip install 'samjax[cloud]'") from e
    return gcsfs.GCSFileSystem(use_listings_cache=False, skip_instance_cache=True)
  try:
    import s3fs
  except ImportError as e:
    raise UnsupportedStoreError(
        "s3:// paths need s3fs: pip install 'samjax[cloud]'") from e
  return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)


def filesystem(path: str | os.PathLike):
  """The fsspec filesystem of a remote path (``UnsupportedStoreError`` for a local one)."""
  kind = scheme(path)
  if not kind:
    raise UnsupportedStoreError(f"{path} is a local path")
  configure_clients()
  return _filesystem(kind, os.getpid())


def _is_transient(e: BaseException) -> bool:
  if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError,
                    NotADirectoryError, FileExistsError, UnsupportedStoreError)):
    return False
  code = getattr(e, "code", None) or getattr(e, "status", None)
  if isinstance(code, int):
    return code == 429 or code >= 500
  if isinstance(e, (ConnectionError, TimeoutError, OSError)):
    return True
  # aiohttp / botocore connection errors are not OSErrors.
  name = type(e).__name__
  return any(word in name for word in ("Timeout", "Connection", "ServerDisconnected",
                                       "ClientPayload", "EndpointConnection"))


def retrying(call: Callable[[], T], what: str) -> T:
  """``call()`` with up to ``RETRIES`` attempts on transient errors, then a
  ``StorageError`` naming ``what``; other errors propagate at once."""
  for attempt in range(RETRIES):
    try:
      return call()
    except Exception as e:  # sorted by _is_transient
      if not _is_transient(e):
        raise
      if attempt == RETRIES - 1:
        raise StorageError(f"{what}: still failing after {RETRIES} attempts: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                           ) from e
      time.sleep(RETRY_BASE_SECONDS * 2 ** attempt)
  raise AssertionError("unreachable")


def _strip(path: str) -> str:
  """fsspec's own spelling of a remote path (``bucket/key``)."""
  return path.split("://", 1)[1].rstrip("/")


# --- queries ---------------------------------------------------------------------------

def exists(path: str | os.PathLike) -> bool:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.exists(path)
  return retrying(lambda: filesystem(path).exists(_strip(path)), f"exists {path}")


def isfile(path: str | os.PathLike) -> bool:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.isfile(path)
  return retrying(lambda: filesystem(path).isfile(_strip(path)), f"stat {path}")


def isdir(path: str | os.PathLike) -> bool:
  """Local: a folder. Remote: a prefix holding at least one object."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.isdir(path)
  return retrying(lambda: filesystem(path).isdir(_strip(path)), f"stat {path}")


def getsize(path: str | os.PathLike) -> int:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.getsize(path)
  return int(retrying(lambda: filesystem(path).size(_strip(path)), f"stat {path}"))


def listdir(path: str | os.PathLike) -> list[str]:
  """Sorted names directly under ``path`` (files and folders / prefixes).

  Raises FileNotFoundError when there is nothing there."""
  path = os.fspath(path)
  if not is_remote(path):
    return sorted(os.listdir(path))
  fs = filesystem(path)
  try:
    entries = retrying(lambda: fs.ls(_strip(path), detail=False), f"list {path}")
  except FileNotFoundError:
    raise FileNotFoundError(f"no such folder: {path}") from None
  prefix = _strip(path) + "/"
  names = {e.rstrip("/")[len(prefix):] if e.startswith(prefix) else posixpath.basename(e)
           for e in entries}
  return sorted(n for n in names if n)


def walk_files(path: str | os.PathLike) -> list[str]:
  """Every file below ``path`` as a path relative to it, sorted."""
  path = os.fspath(path)
  if not is_remote(path):
    out = []
    for root, _, files in os.walk(path):
      out.extend(os.path.relpath(os.path.join(root, f), path) for f in files)
    return sorted(out)
  fs = filesystem(path)
  prefix = _strip(path) + "/"
  found = retrying(lambda: fs.find(_strip(path)), f"list {path}")
  return sorted(f[len(prefix):] for f in found if f.startswith(prefix))


# --- reads -----------------------------------------------------------------------------

def open_read(path: str | os.PathLike, mode: str = "rb",
              encoding: str | None = None) -> IO[Any]:
  """A file object for reading (``"rb"`` or ``"r"``); remote files read in
  blocks on demand."""
  path = os.fspath(path)
  if mode not in ("r", "rb"):
    raise ValueError(f"open_read takes 'r' or 'rb', got {mode!r}; write with atomic_io")
  if not is_remote(path):
    return builtins.open(path, mode, encoding=encoding)
  return retrying(lambda: filesystem(path).open(_strip(path), mode, encoding=encoding),
                  f"open {path}")


def read_bytes(path: str | os.PathLike) -> bytes:
  path = os.fspath(path)
  if not is_remote(path):
    with builtins.open(path, "rb") as f:
      return f.read()
  return retrying(lambda: filesystem(path).cat_file(_strip(path)), f"read {path}")


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
  return read_bytes(path).decode(encoding)


def read_range(path: str | os.PathLike, offset: int, size: int) -> bytes:
  """``size`` bytes at ``offset`` (fewer only at the end of the file): one
  ``pread`` locally, one byte-range request remotely."""
  path = os.fspath(path)
  if not is_remote(path):
    with builtins.open(path, "rb") as f:
      f.seek(offset)
      return f.read(size)
  fs = filesystem(path)
  return retrying(lambda: fs.cat_file(_strip(path), start=offset, end=offset + size),
                  f"read {path}@{offset}+{size}")


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[str]:
  """A local file name with ``path``'s content, for libraries that need one
  (a remote file is downloaded to a temp file removed afterwards)."""
  path = os.fspath(path)
  if not is_remote(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="samjax-download-") as tmp:
    local = os.path.join(tmp, basename(path))
    retrying(lambda: filesystem(path).get_file(_strip(path), local), f"download {path}")
    yield local


@contextlib.contextmanager
def local_folder_copy(path: str | os.PathLike) -> Iterator[str]:
  """A local folder with the files under ``path`` (downloaded when remote)."""
  path = os.fspath(path)
  if not is_remote(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="samjax-download-") as tmp:
    for rel in walk_files(path):
      local = os.path.join(tmp, rel)
      os.makedirs(os.path.dirname(local), exist_ok=True)
      src = join(path, rel)
      retrying(lambda src=src, local=local: filesystem(path).get_file(_strip(src), local),
               f"download {src}")
    yield tmp


# --- changes ---------------------------------------------------------------------------

def open_append(path: str | os.PathLike, encoding: str = "utf-8") -> IO[str]:
  """A local text file opened for appending. Object stores cannot append
  (gcsfs's ``"a"`` silently overwrites): callers keep a bucket layout of
  whole objects instead, and a remote path here is an error."""
  path = os.fspath(path)
  if is_remote(path):
    raise UnsupportedStoreError(f"{path}: object stores cannot append; write whole objects")
  return builtins.open(path, "a", encoding=encoding)


def makedirs(path: str | os.PathLike) -> None:
  """Local: ``os.makedirs(exist_ok=True)``. Remote: nothing to do (a prefix
  exists once an object is written under it)."""
  path = os.fspath(path)
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike, missing_ok: bool = True) -> None:
  path = os.fspath(path)
  try:
    if not is_remote(path):
      os.remove(path)
    else:
      retrying(lambda: filesystem(path).rm_file(_strip(path)), f"delete {path}")
  except FileNotFoundError:
    if not missing_ok:
      raise


def rmtree(path: str | os.PathLike) -> None:
  """Deletes ``path`` and everything below it (missing: nothing to do)."""
  path = os.fspath(path)
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=False) if os.path.isdir(path) else remove(path)
    return
  fs = filesystem(path)
  files = walk_files(path)
  for rel in files:
    retrying(lambda rel=rel: fs.rm_file(_strip(join(path, rel))), f"delete {path}/{rel}")


def copy_object(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Copies one file (local) or object (remote: server-side, nothing downloaded)."""
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src):
    shutil.copyfile(src, dst)
    return
  fs = filesystem(src)
  retrying(lambda: fs.copy(_strip(src), _strip(dst)), f"copy {src} to {dst}")


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Copies every file below ``src`` to the same place below ``dst`` (same store)."""
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src):
    shutil.copytree(src, dst)
    return
  for rel in walk_files(src):
    copy_object(join(src, rel), join(dst, rel))


def move_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Moves the folder ``src`` to ``dst``. Local: one rename. Remote (no
  rename): copy everything, then delete the source; a crash in between leaves
  both copies, never neither."""
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src):
    shutil.move(src, dst)
    return
  copy_tree(src, dst)
  rmtree(src)


# --- orbax checkpoints -------------------------------------------------------------------

ORBAX_S3_ISSUE = "https://github.com/google/orbax/issues/359"


def check_checkpoint_location(path: str | os.PathLike) -> str:
  """``path`` resolved for orbax (workdir checkpoints, model-dir params).

  orbax-checkpoint 0.12 writes arrays to local disk and to gs:// (through
  tensorstore, with commit files instead of renames); it hands ``s3://`` to
  tensorstore's local ``file`` driver, so an S3 checkpoint would end up in a
  local folder named ``s3:``. That is refused here in one line.
  """
  path = os.fspath(path)
  if scheme(path) == "s3":
    raise UnsupportedStoreError(
        f"{path}: orbax-checkpoint cannot write or read checkpoints on s3:// yet "
        f"({ORBAX_S3_ISSUE}); keep checkpoints (the workdir, model dirs) on gs:// or a "
        "local/mounted disk. Data, .pth/safetensors/HF exports, amg and eval outputs "
        "work on s3://")
  configure_clients()
  return resolve(path)

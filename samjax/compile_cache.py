"""jax's persistent compilation cache, so a second process does not compile again.

Every new process otherwise pays XLA's compile of each jitted function: ~30 s
for the predictor's first ``predict`` on a 2-core CPU, minutes for a train
step. With the cache on, a compiled executable is written to a folder keyed
by the program, the jax/XLA version and the devices, and a later process
with the same program loads it instead of compiling.

``samjax`` commands turn it on by default, and so do the Python entry points
that compile on behalf of the user (``SamPredictor`` and
``SamAutomaticMaskGenerator``, core and ``samjax.segment_anything``:
``ensure_compile_cache``, at construction), unless jax's cache is already
configured (kept as it is) or ``SAMJAX_COMPILATION_CACHE=off``.
``samjax.enable_compile_cache()`` turns it on explicitly (another folder,
another threshold). ``import samjax`` alone changes no jax setting.

Turning it on sets three process-wide jax options
(``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``,
``jax_compilation_cache_max_size``): other jax code in the same process then
uses the cache too. The one switch that keeps samjax from touching them is
``SAMJAX_COMPILATION_CACHE=off``.

The first time the default folder is created, one line on stderr says where
it is and how to turn the cache off; a folder named by the argument or
``$SAMJAX_COMPILATION_CACHE`` is not announced.

Where: ``path`` argument, else ``$SAMJAX_COMPILATION_CACHE``, else an already
configured ``$JAX_COMPILATION_CACHE_DIR``, else
``$XDG_CACHE_HOME/samjax/xla`` (``~/.cache/samjax/xla``).
``SAMJAX_COMPILATION_CACHE=off`` turns it off. A folder that cannot be
created or written is reported once and the cache stays off: a cache never
stops a run.

The folder may be a ``gs://`` or ``s3://`` prefix (jax reads and writes it
through etils.epath), e.g. one cache shared by every host of a pod. There
jax writes each entry as one object, has no file lock to guard eviction and
so the cache is unbounded: expire old entries with the bucket's lifecycle
rules.

The cache is bounded (``MAX_BYTES``, least recently used entries go first)
and, bounded, jax guards every read and write with a file lock, so
concurrent processes (the hosts of a multi-process run on one machine, two
commands at once) never read an entry another is still writing. jax writes
an entry in place, not atomically: a process killed in the middle of a write
leaves a truncated entry, which jax reports ("Error reading persistent
compilation cache entry") and compiles around; deleting the folder clears it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from data_pipelines import atomic_io, storage

ENV = "SAMJAX_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")

# Programs that compile faster than this are not written (jax's default is
# 1 s): the file-system round trip would cost about what it saves.
MIN_COMPILE_SECONDS = 0.5
# Cache size bound (a ViT-H train step is ~100 MB of executable).
MAX_BYTES = 4 * 2 ** 30


def default_dir() -> str:
  home = os.path.expanduser("~")  # local-only: the user's home folder
  base = os.environ.get("XDG_CACHE_HOME") or storage.join(home, ".cache")
  return storage.join(base, "samjax", "xla")


def resolve_dir(path: str | None = None) -> str | None:
  """The folder the cache would use, or None when it is turned off."""
  if path is None:
    path = os.environ.get(ENV)
  if path is None:
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
  if path.strip().lower() in OFF or not path.strip():
    return None
  if storage.is_remote(path):
    return storage.resolve(path)
  return storage.resolve(os.path.expanduser(path))  # local-only: ~ of a local path


def _writable(folder: str) -> bool:
  """Local: the folder exists (created) and takes new files; bucket: it exists."""
  try:
    atomic_io.ensure_dir(folder)
    return True
  except (OSError, storage.UnsupportedStoreError):
    return False


def enable_compile_cache(path: str | None = None,
                         min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
  """Turns on jax's persistent compilation cache; returns its folder or None.

  Args:
    path: cache folder (see the module docstring for the default); "off"
      turns the cache off.
    min_compile_seconds: only programs that took at least this long to
      compile are written.
  """
  import jax

  folder = resolve_dir(path)
  if folder is None:
    return None
  announce = (path is None and os.environ.get(ENV) is None
              and not os.environ.get("JAX_COMPILATION_CACHE_DIR")
              and not storage.is_remote(folder) and not storage.isdir(folder))
  if not _writable(folder):
    print(f"[samjax] compilation cache off: cannot write {folder} "
          f"(set {ENV}=DIR or {ENV}=off)", file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
  # jax bounds a cache with a file lock, which a bucket cannot hold: unbounded
  # there. Locally the lock is the filelock package (a base requirement; were it
  # missing, a bounded cache would fail every read: unbounded then too).
  bounded = not storage.is_remote(folder) and importlib.util.find_spec("filelock") is not None
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES if bounded else -1)
  if announce:  # once per machine: the default folder did not exist yet
    print(f"[samjax] compiled programs are cached in {folder} "
          f"({ENV}=DIR moves it, {ENV}=off turns it off)", file=sys.stderr)
  return folder


def ensure_compile_cache() -> str | None:
  """The Python API's default: the cache on, unless already configured.

  A folder the user (or an earlier call) gave jax is kept as it is;
  ``SAMJAX_COMPILATION_CACHE=off`` keeps it off. Otherwise the default
  folder is turned on, also after jax has already compiled something in
  this process (jax decides once, at its first compile, whether a cache is
  used; that decision is reset so later programs use the new folder).
  Returns the folder in use, or None.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache

  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured
  folder = enable_compile_cache()
  if folder is not None:
    compilation_cache.reset_cache()
  return folder

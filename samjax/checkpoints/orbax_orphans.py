"""Quiets the orphaned reads a failed orbax restore leaves behind (its one-line report is enough).

Where the noise comes from: orbax restores a checkpoint on a fresh asyncio
event loop (``orbax.checkpoint._src.asyncio_utils.run_sync``), reading every
array shard as a task under ``asyncio.gather``. When one shard is unreadable
(a truncated or corrupt file), ``gather`` raises that first error, which
``samjax.checkpoints.workdir`` reports in one line, and orbax closes the
loop without waiting for or cancelling the other reads. When those orphaned tasks and
coroutines are garbage collected, Python reports each again: asyncio logs
"Task exception was never retrieved" (logger ``asyncio``) for every read
that failed too, and every coroutine that was still waiting prints "Exception
ignored in: <coroutine ...>" (``sys.unraisablehook``), each with a TensorStore
spec: thousands of lines after a single corrupt step.

``after_failed_restore`` (called after a failed restore, once the error is
in hand) drops exactly those reports, and nothing before a restore has failed:

* asyncio's "Task exception was never retrieved" and "_GatheringFuture
  exception was never retrieved" records whose exception passed through
  orbax.checkpoint's code;
* unraisable exceptions of coroutines defined in orbax.checkpoint;

then collects garbage, so this attempt's orphans are finalised (and dropped)
at once rather than at some random later point of the run. Every other log
record and unraisable exception is passed on unchanged.
"""

from __future__ import annotations

import gc
import logging
import sys

import orbax.checkpoint as ocp

from data_pipelines import storage

_ORBAX_DIR = storage.join(storage.dirname(ocp.__file__), "")  # ends with a separator


def _code_in_orbax(filename: str) -> bool:
  return filename.startswith(_ORBAX_DIR)


def _raised_in_orbax(exc: BaseException | None) -> bool:
  """Whether ``exc``, or an exception it was raised from, passed through orbax.checkpoint."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    tb = exc.__traceback__
    while tb is not None:
      if _code_in_orbax(tb.tb_frame.f_code.co_filename):
        return True
      tb = tb.tb_next
    exc = exc.__cause__ or exc.__context__
  return False


class _OrphanedTaskFilter(logging.Filter):
  """Drops asyncio's report of an orbax read task nobody awaited."""

  def filter(self, record: logging.LogRecord) -> bool:
    # asyncio names the class: "Task ..." for a read, "_GatheringFuture ..." for
    # the gather whose first error orbax already raised.
    if "exception was never retrieved" not in str(record.msg).split("\n", 1)[0]:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    return not _raised_in_orbax(exc)


class _OrphanedCoroutineHook:
  """``sys.unraisablehook`` that drops orbax coroutines closed by the garbage
  collector and hands everything else to the hook it replaced."""

  def __init__(self, previous):
    self.previous = previous

  def __call__(self, unraisable) -> None:
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and _code_in_orbax(code.co_filename):
      return
    self.previous(unraisable)


def after_failed_restore() -> None:
  """Installs the two filters (once) and finalises this attempt's orphans now."""
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _OrphanedTaskFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_OrphanedTaskFilter())
  # Checked every time: a test runner may have put its own hook back since.
  if not isinstance(sys.unraisablehook, _OrphanedCoroutineHook):
    sys.unraisablehook = _OrphanedCoroutineHook(sys.unraisablehook)
  gc.collect()

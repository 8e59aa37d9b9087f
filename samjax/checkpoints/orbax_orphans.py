"""Quiets the orphaned reads a failed orbax restore leaves behind (its one-line report is enough).

Where the noise comes from: orbax restores a checkpoint on a fresh asyncio
event loop (``orbax.checkpoint._src.asyncio_utils.run_sync``), reading every
array shard as a task under ``asyncio.gather``, each awaiting a TensorStore
future. When one shard is unreadable (a truncated or corrupt file),
``gather`` raises that first error, which ``samjax.checkpoints.workdir``
reports in one line, and orbax closes the loop without waiting for or
cancelling the other reads. What is left then reports itself, at garbage
collection or whenever a TensorStore thread finishes a read, each report with
a TensorStore spec: thousands of lines after a single corrupt step.

* asyncio logs "<Task | Future | _GatheringFuture> exception was never
  retrieved" (logger ``asyncio``) for each failed read and for the gather;
* every coroutine still waiting prints "Exception ignored in: <coroutine
  ...>" (``sys.unraisablehook``);
* every TensorStore read finishing later tries to wake the closed loop
  (``call_soon_threadsafe``) and prints "RuntimeError: Event loop is closed"
  through ``sys.unraisablehook``.

``after_failed_restore`` (called after a failed restore, once the error is
in hand; nothing is filtered before a restore has failed) drops exactly what
concerns work left on an event loop that is already closed, where nobody can
ever retrieve it, or orbax's own coroutines:

* asyncio's "exception was never retrieved" records reported through a
  closed loop, or whose exception passed through orbax.checkpoint's code;
* unraisable exceptions of coroutines defined in orbax.checkpoint, and
  "Event loop is closed" raised by asyncio's ``call_soon_threadsafe``;

then collects garbage, so this attempt's orphans are finalised (and dropped)
at once rather than at some random later point of the run. Every other log
record and unraisable exception is passed on unchanged. (samjax itself runs
no event loop: every asyncio loop in the process belongs to a library.)
"""

from __future__ import annotations

import asyncio
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


def _reporting_loop_is_closed() -> bool:
  """Whether the asyncio report being logged now goes through a closed loop
  (``loop.call_exception_handler`` is on the stack: the future's own loop)."""
  frame = sys._getframe()
  while frame is not None:
    if frame.f_code.co_name == "call_exception_handler":
      loop = frame.f_locals.get("self")
      if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.is_closed()
    frame = frame.f_back
  return False


class _OrphanedTaskFilter(logging.Filter):
  """Drops asyncio's report of an orbax read nobody can await any more."""

  def filter(self, record: logging.LogRecord) -> bool:
    # asyncio names the class: "Task", "Future" (a TensorStore read) or
    # "_GatheringFuture" (the gather whose first error orbax already raised).
    if "exception was never retrieved" not in str(record.msg).split("\n", 1)[0]:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    return not (_reporting_loop_is_closed() or _raised_in_orbax(exc))


def _wakes_a_closed_loop(unraisable) -> bool:
  """A TensorStore callback's ``call_soon_threadsafe`` on a closed loop."""
  exc = unraisable.exc_value
  if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
    return False
  tb = exc.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
      return True
    tb = tb.tb_next
  return False


class _OrphanedCoroutineHook:
  """``sys.unraisablehook`` that drops orbax coroutines closed by the garbage
  collector and reads finishing on a closed loop, and hands everything else
  to the hook it replaced."""

  def __init__(self, previous):
    self.previous = previous

  def __call__(self, unraisable) -> None:
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and _code_in_orbax(code.co_filename):
      return
    if _wakes_a_closed_loop(unraisable):
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

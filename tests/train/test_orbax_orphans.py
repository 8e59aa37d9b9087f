"""The filters for a failed restore's orphaned reads drop exactly what
concerns work left on a closed event loop (or orbax's own coroutines), and
pass every other report on."""

import asyncio
import gc
import logging
import sys

from orbax.checkpoint._src.asyncio_utils import cancellable

from samjax.checkpoints import orbax_orphans


async def _unreadable_shard():
  raise ValueError("OUT_OF_RANGE: shard")


async def _plain(coro):
  return await coro


def _leave_gather_unretrieved(wrap, close_loop: bool) -> None:
  """Two failing reads under ``asyncio.gather``; the gather's error is never
  retrieved (what orbax leaves behind), then collected."""
  loop = asyncio.new_event_loop()
  left = []  # outlives the loop, as the failed restore's traceback does

  async def main():
    left.append(asyncio.gather(wrap(_unreadable_shard()), wrap(_unreadable_shard())))
    await asyncio.sleep(0.01)
    assert left[0].done()

  loop.run_until_complete(main())
  if close_loop:
    loop.close()
  left.clear()
  gc.collect()
  if not close_loop:
    loop.close()


def _never_retrieved(caplog) -> list[str]:
  return [r.getMessage().split("\n")[0] for r in caplog.records
          if "never retrieved" in r.getMessage()]


def test_never_retrieved_reports_of_closed_loops_or_orbax_are_dropped(caplog):
  orbax_orphans.after_failed_restore()
  caplog.set_level(logging.ERROR, logger="asyncio")
  _leave_gather_unretrieved(_plain, close_loop=False)  # someone else's live loop: kept
  assert _never_retrieved(caplog) == ["_GatheringFuture exception was never retrieved"]
  caplog.clear()
  _leave_gather_unretrieved(_plain, close_loop=True)
  _leave_gather_unretrieved(cancellable, close_loop=False)  # raised through orbax
  assert _never_retrieved(caplog) == []


class _WakesLoopWhenCollected:
  """Calls ``call_soon_threadsafe`` from ``__del__`` (what a TensorStore
  callback does when a read finishes): an exception there is unraisable."""

  def __init__(self, loop):
    self.loop = loop

  def __del__(self):
    self.loop.call_soon_threadsafe(lambda: None)


def test_waking_a_closed_loop_is_dropped_other_unraisables_kept():
  seen = []
  previous = sys.unraisablehook
  sys.unraisablehook = lambda u: seen.append(repr(u.exc_value))
  try:
    orbax_orphans.after_failed_restore()
    closed = asyncio.new_event_loop()
    closed.close()
    _WakesLoopWhenCollected(closed)  # collected at once: "Event loop is closed"
    _WakesLoopWhenCollected(None)  # AttributeError: not a closed loop, kept
    gc.collect()
  finally:
    sys.unraisablehook = previous
  assert len(seen) == 1 and "AttributeError" in seen[0], seen

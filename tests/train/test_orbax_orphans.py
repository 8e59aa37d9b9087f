"""The filter for a failed restore's orphaned reads drops exactly asyncio's
"never retrieved" reports of errors raised through orbax (tasks and the
gather itself), and passes every other report on."""

import asyncio
import gc
import logging

from orbax.checkpoint._src.asyncio_utils import cancellable

from samjax.checkpoints.orbax_orphans import after_failed_restore


async def _unreadable_shard():
  raise ValueError("OUT_OF_RANGE: shard")


def _leave_gather_unretrieved(wrap) -> None:
  """Two failing reads under ``asyncio.gather``; the gather's error is never
  retrieved (what orbax leaves when it closes the loop), then collected."""
  loop = asyncio.new_event_loop()

  async def main():
    gathered = asyncio.gather(wrap(_unreadable_shard()), wrap(_unreadable_shard()))
    await asyncio.sleep(0.01)
    assert gathered.done()

  loop.run_until_complete(main())
  loop.close()
  gc.collect()


def _never_retrieved(caplog) -> list[str]:
  return [r.getMessage().split("\n")[0] for r in caplog.records
          if "never retrieved" in r.getMessage()]


def test_gather_of_orbax_reads_is_dropped_and_others_kept(caplog):
  after_failed_restore()
  caplog.set_level(logging.ERROR, logger="asyncio")

  async def plain(coro):
    return await coro

  _leave_gather_unretrieved(plain)  # not orbax's code: the report stays
  assert _never_retrieved(caplog) == ["_GatheringFuture exception was never retrieved"]
  caplog.clear()
  _leave_gather_unretrieved(cancellable)  # raised through orbax: dropped
  assert _never_retrieved(caplog) == []

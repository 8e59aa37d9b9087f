"""How `samjax amg` / `samjax eval` processes split the images and meet at
the end (``process_split``, ``process_group``); the meeting between real
processes joined by jax.distributed over 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time

import pytest

from samjax.inference import process_split
from tests.multiprocess import launched, wait_all


def test_round_robin_split_covers_every_item_once():
  items = [f"img{i}" for i in range(10)]
  for count in (1, 2, 3, 4, 11):
    shares = [process_split.share(items, k, count) for k in range(count)]
    assert sorted(x for s in shares for x in s) == sorted(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
  assert process_split.share(items, 1, 3) == ["img1", "img4", "img7"]
  assert process_split.share(items[:2], 2, 3) == []  # more processes than images
  with pytest.raises(ValueError):
    process_split.share(items, 3, 3)


def test_a_done_prefix_is_dealt_evenly_on_another_count():
  """Why round robin: what a killed run did is a prefix of the list; a
  restart on another number of processes leaves each about as much to do."""
  done = set(range(60))  # 2 processes, killed after 30 images each
  for count in (3, 4, 5):
    left = [len([i for i in process_split.share(range(100), k, count) if i not in done])
            for k in range(count)]
    assert max(left) - min(left) <= 1, left


# Each process: its place, two exchanges (the coordination service, then the
# device all-gather), one where process 1 fails; then process 1 SIGTERMs
# itself, which must stop it (jax's preemption service is off).
_SCRIPT = """
import dataclasses, json, os, signal, sys, time
from samjax.inference import process_group
g = process_group.join()
out = {"group": [g.index, g.count, g.coordination],
       "service": g.exchange("a", {"i": g.index, "text": "\\u00e9" * g.index}),
       "devices": dataclasses.replace(g, coordination="devices").exchange("b", {"i": g.index})}
try:
  with g.reporting_errors("c"):
    if g.index == 1:
      raise OSError("disk full")
    out["failures"] = process_group.failures(g.exchange("c", {"ok": True}))
except OSError as e:
  out["raised"] = str(e)
print(json.dumps(out), flush=True)
if g.index == 1:
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(60)
"""


@pytest.mark.xdist_group("processes")
def test_processes_exchange_summaries_and_errors():
  with launched([[sys.executable, "-c", _SCRIPT]] * 2) as procs:
    rc, out1, err1 = wait_all(procs[1:], timeout=120)[0]
    assert rc == -15, err1[-3000:]  # SIGTERM stopped it
    # Process 0 prints, then waits at jax's shutdown for the dead process 1
    # (until the heartbeat timeout): read its output, the block kills it.
    deadline = time.monotonic() + 60
    while not procs[0].output()[0].endswith("\n") and time.monotonic() < deadline:
      time.sleep(0.1)
    out0 = procs[0].output()[0]
  # The last line: gloo prints its connections to stdout first.
  docs = [json.loads(out.strip().splitlines()[-1]) for out in (out0, out1)]
  for index, doc in enumerate(docs):
    assert doc["group"] == [index, 2, "service"]
    assert doc["service"] == [{"i": 0, "text": ""}, {"i": 1, "text": "\u00e9"}]
    assert doc["devices"] == [{"i": 0}, {"i": 1}]
  assert docs[0]["failures"] == [[1, "OSError: disk full"]]
  assert docs[1]["raised"] == "disk full"

"""The processes of one ``samjax amg`` / ``samjax eval`` run, and where they meet.

A pod user starts the same command on every host, with the environment
``samjax train`` reads (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; ``samjax.mesh.maybe_initialize_distributed``). ``join()``
starts jax's distributed runtime from it; each process then takes its share
of the images (``process_split``: position ``i`` -> process ``i % N``) and
works alone, no collective in between.

They meet once at the end, in ``exchange``: every process hands in a small
JSON summary (counts, or the error that stopped it) and gets everyone's.
eval needs it (process 0 merges only once all images are in); amg uses it
for one exit status. It is needed anyway: jax shuts a process down through
a barrier of all processes that waits ``shutdown_timeout`` (300 s) only, and
a process that finished its share earlier than that before the slowest one
would fail it, upon which the coordination service aborts every process,
the slow ones mid-image. ``exchange`` waits up to ``BARRIER_TIMEOUT_S``
instead, and then all shut down together.

A process that dies (kill -9, out of memory, a lost host) is not waited for
that long: jax's heartbeat notices it (100 s by default) and the
coordination service stops every other process (SIGABRT, "Terminating
process because the JAX distributed service detected fatal errors").
Nothing is lost: outputs are written whole, so rerunning the same command,
on any number of processes, does only what is not done.

SIGTERM: with the distributed runtime up, jax's preemption sync manager
takes SIGTERM and lets the process run on (``samjax train`` saves a
checkpoint at an agreed step). amg and eval have nothing to save and resume
from their outputs, so ``join`` turns that off: SIGTERM stops a process of
N as it stops a single one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence

from samjax.inference import process_split

# How long a process waits for the others in ``exchange``: far beyond any
# skew between shares, since a dead process is found by the heartbeat and a
# live one's work must not be cut off. Only a live, stuck process hits it.
BARRIER_TIMEOUT_S = 7 * 24 * 3600
# Fixed size of one summary in the device-collective fallback.
_PAYLOAD_BYTES = 4096
# Longest error text a summary carries.
_ERROR_CHARS = 1000


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
  """This process's place among the ``count`` processes of one run.

  ``coordination``: "service" (jax's coordination service: key-value store
  and barrier; what ``join`` starts) or "devices" (a cross-process
  all-gather; for several processes that jax set up without a coordination
  client).
  """
  index: int = 0
  count: int = 1
  coordination: str = "service"

  @property
  def several(self) -> bool:
    return self.count > 1

  @property
  def label(self) -> str:
    """``process k/N`` for logs (k as in JAX_PROCESS_ID, from 0)."""
    return f"process {self.index}/{self.count}"

  def share(self, items: Sequence) -> list:
    """This process's items (``process_split.share``)."""
    return process_split.share(items, self.index, self.count)

  def owns(self, position: int) -> bool:
    """Whether the input at ``position`` of the common list is this process's."""
    return process_split.owner(position, self.count) == self.index

  def exchange(self, name: str, summary: dict) -> list[dict]:
    """Every process's ``summary``, in process order, once all have given
    theirs (a barrier). ``name``: one per meeting of a run."""
    text = json.dumps(summary)
    if not self.several:
      return [json.loads(text)]
    if self.coordination == "service":
      return _exchange_service(name, text, self.index, self.count)
    return _exchange_devices(text)

  @contextlib.contextmanager
  def reporting_errors(self, name: str):
    """Runs the block; if it raises, the others get ``{"error": ...}`` as
    this process's summary at ``exchange(name)`` (so none waits for a
    summary that never comes), then the error goes on."""
    try:
      yield
    except Exception as e:
      if self.several:
        with contextlib.suppress(Exception):  # the original error matters more
          self.exchange(name, error_summary(e))
      raise


def error_summary(e: BaseException) -> dict:
  """A summary saying that this process stopped, and why (one line)."""
  text = " ".join(f"{type(e).__name__}: {e}".split())
  return {"error": text[:_ERROR_CHARS]}


def failures(summaries: list[dict]) -> list[tuple[int, str]]:
  """(process index, error) of every process whose summary is an error."""
  return [(i, s["error"]) for i, s in enumerate(summaries) if s.get("error")]


def join() -> ProcessGroup:
  """Starts jax's distributed runtime when launched as one of several
  processes (``maybe_initialize_distributed``), then ``current()``. Must run
  before anything starts a jax backend."""
  import jax

  from samjax.mesh import maybe_initialize_distributed
  if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
    # Read by jax.distributed.initialize: SIGTERM then stops the process.
    jax.config.update("jax_enable_preemption_service", False)
  maybe_initialize_distributed()
  return current()


def current() -> ProcessGroup:
  """The group jax knows of now (one process unless distributed)."""
  import jax
  count = jax.process_count()
  if count == 1:
    return ProcessGroup()
  return ProcessGroup(jax.process_index(), count,
                      "service" if _client() is not None else "devices")


def _client():
  from jax._src import distributed  # the only handle on the coordination client
  return distributed.global_state.client


def _exchange_service(name: str, text: str, index: int, count: int) -> list[dict]:
  """Key-value store + barrier of jax's coordination service (no devices,
  no compiling; works the same with gloo on CPU, GPU and TPU)."""
  client = _client()
  prefix = f"samjax/{name}/"
  client.key_value_set(f"{prefix}{index}", text, allow_overwrite=True)
  client.wait_at_barrier(f"samjax/{name}", BARRIER_TIMEOUT_S * 1000)
  found = {int(key.rsplit("/", 1)[1]): value for key, value in client.key_value_dir_get(prefix)}
  return [json.loads(found[i]) for i in range(count)]


def _exchange_devices(text: str) -> list[dict]:
  """An all-gather of fixed-size byte arrays over the processes' devices."""
  import numpy as np
  from jax.experimental import multihost_utils
  data = text.encode("utf-8")
  if len(data) > _PAYLOAD_BYTES:
    raise ValueError(f"a process summary of {len(data)} bytes exceeds {_PAYLOAD_BYTES}")
  mine = np.frombuffer(data.ljust(_PAYLOAD_BYTES, b" "), np.uint8)
  every = np.asarray(multihost_utils.process_allgather(mine))
  return [json.loads(bytes(row).decode("utf-8")) for row in every]

"""TensorBoard event files of a run, on local disk or in a bucket, flushed at every log.

tensorboardX builds the events and writes the files (``EventsWriter``: the
record framing and CRCs TensorBoard reads), synchronously: ``SummaryWriter``
queues events for a background thread, so its ``flush`` can miss the latest
ones, and its bucket writers upload again at garbage collection.

On local disk events go straight into ``W/tensorboard/events.out.tfevents.*``
and every flush fsyncs the file.

On ``gs://`` / ``s3://`` an object cannot be appended to, so the event file is
written to a local spool and every flush uploads it whole, as one object
(``atomic_io``, through the same clients and retries as every other samjax
write): TensorBoard sees the file as of the last flush, never a torn record.
Since each upload repeats the whole file, a new event file starts after
``ROLL_FLUSHES`` flushes or ``ROLL_BYTES`` bytes, which bounds an upload;
TensorBoard reads a folder's event files in name order, and the names sort in
write order (time, then a per-process counter).

A resumed run starts with a ``SessionLog.START`` event at the first step it
trains again: TensorBoard then drops the points the killed run logged after
the restored checkpoint, as the metrics log does.
"""

from __future__ import annotations

import os
import tempfile
import time

from data_pipelines import atomic_io, storage

ROLL_FLUSHES = 50         # bucket: flushes per event file (each re-uploads the file)
ROLL_BYTES = 8 << 20      # bucket: or this many bytes, whichever comes first


class EventLog:
  """Scalars and images for TensorBoard in ``logdir``; files open at the first event."""

  def __init__(self, logdir: str, restart_step: int | None = None):
    """``restart_step``: the checkpoint step a resumed run continues from (None: fresh)."""
    self.logdir = logdir
    self.remote = storage.is_remote(logdir)
    self._restart_step = restart_step
    self._writer = None
    self._spool = None        # remote: local folder holding the current event file
    self._files = 0           # event files this process started
    self._flushes = 0         # flushes of the current event file

  def _open(self):
    from tensorboardX.event_file_writer import EventsWriter
    self._files += 1
    # pid + counter: unique and in write order among this process's files
    # (the time part of tensorboardX's name has one-second resolution).
    suffix = f".{os.getpid()}.{self._files:05d}"
    if self.remote:
      self._spool = tempfile.TemporaryDirectory(prefix="samjax-tensorboard-")
      folder = self._spool.name
    else:
      storage.makedirs(self.logdir)
      folder = self.logdir
    self._writer = EventsWriter(storage.join(folder, "events"), suffix)
    self._flushes = 0
    if self._restart_step is not None:
      from tensorboardX.proto.event_pb2 import Event, SessionLog
      self._writer.write_event(Event(wall_time=time.time(), step=self._restart_step + 1,
                                     session_log=SessionLog(status=SessionLog.START)))
      self._restart_step = None

  def _write(self, summary, step: int) -> None:
    from tensorboardX.proto.event_pb2 import Event
    if self._writer is None:
      self._open()
    self._writer.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

  def scalar(self, tag: str, value: float, step: int) -> None:
    from tensorboardX.summary import scalar
    self._write(scalar(tag, float(value)), step)

  def image(self, tag: str, image_hwc_uint8, step: int) -> None:
    from tensorboardX.summary import image
    self._write(image(tag, image_hwc_uint8, dataformats="HWC"), step)

  def _spool_file(self) -> str:
    (name,) = storage.listdir(self._spool.name)
    return storage.join(self._spool.name, name)

  def flush(self) -> None:
    """Local: the events are on disk (fsynced). Bucket: the event file is
    uploaded whole; after ``ROLL_FLUSHES`` flushes or ``ROLL_BYTES`` the next
    event starts a new file."""
    if self._writer is None:
      return
    self._writer.flush()
    if not self.remote:
      return
    local = self._spool_file()
    atomic_io.copy_file(local, storage.join(self.logdir, storage.basename(local)))
    self._flushes += 1
    if self._flushes >= ROLL_FLUSHES or storage.getsize(local) >= ROLL_BYTES:
      self._finish_file()

  def _finish_file(self) -> None:
    self._writer.close()
    self._writer = None
    if self._spool is not None:
      self._spool.cleanup()
      self._spool = None

  def close(self) -> None:
    """Flushes (uploads) what is left and closes the file."""
    if self._writer is not None:
      self.flush()
    if self._writer is not None:
      self._finish_file()

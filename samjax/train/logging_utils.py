"""Run logging: console lines, the metrics log and TensorBoard (process 0 only).

The metrics log (``metrics_store``) and the TensorBoard events
(``event_log``) are flushed at every logged record, in the workdir on local
disk or in a bucket, so a run killed without notice loses at most the records
of one logging interval. ``begin`` (once the run knows where it starts)
removes the records a killed run logged after its last checkpoint.
"""

from __future__ import annotations

import time

import numpy as np

from data_pipelines import storage
from samjax import formats
from samjax.train.event_log import EventLog
from samjax.train.metrics_store import MetricsWriter, remove_records


class RunLogger:
  def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
    self.enabled = enabled
    self.total_steps = total_steps
    self._t0 = time.time()
    self._last_time, self._last_step = None, None
    self.workdir = workdir
    self._metrics = None
    self._events = None
    self._restart_step = None

  def begin(self, restored_step: int | None) -> None:
    """Called once the run knows where it starts: at ``restored_step`` (a
    checkpoint) or from scratch (None). Drops the records that step will log
    again: everything after it (all of them from scratch), and the final
    evaluation of a run that had finished (``finish_run`` repeats it)."""
    if not self.enabled:
      return
    self._restart_step = restored_step

    def stale(record: dict) -> bool:
      step = int(record["step"])
      return (restored_step is None or step > restored_step
              or (step == restored_step == self.total_steps and record.get("split") == "eval"))
    removed = remove_records(self.workdir, stale)
    if removed:
      self.info(f"[train] removed {removed} metrics records logged after step "
                f"{restored_step or 0} by the interrupted run (they are logged again)")

  def _open(self):
    """Files open at the first write: a run that fails before it (e.g. a
    config that does not fit the workdir) leaves no trace in the workdir."""
    if self._metrics is not None:
      return
    self._metrics = MetricsWriter(self.workdir)
    self._events = EventLog(storage.join(self.workdir, formats.TENSORBOARD),
                            restart_step=self._restart_step)

  def scalars(self, step: int, metrics: dict, prefix: str = "train"):
    if not self.enabled:
      return
    self._open()
    clean = {k: float(np.asarray(v)) for k, v in metrics.items()
             if not k.startswith("_") and np.ndim(v) == 0}
    self._metrics.write({"step": int(step), "split": prefix, **clean})
    for k, v in clean.items():
      self._events.scalar(f"{prefix}/{k}", v, int(step))
    self._events.flush()

  def image(self, step: int, tag: str, image_hwc_uint8):
    if not self.enabled:
      return
    self._open()
    self._events.image(tag, image_hwc_uint8, int(step))
    self._events.flush()

  def console(self, step: int, metrics: dict, lr: float, images_per_step: int):
    if not self.enabled:
      return
    now = time.time()
    rate = ""
    eta = ""
    if self._last_time is not None and step > self._last_step:
      sec_per_step = (now - self._last_time) / (step - self._last_step)
      rate = f" {images_per_step / sec_per_step:.2f} img/s"
      eta = f" ETA {_fmt((self.total_steps - step) * sec_per_step)}"
    self._last_time, self._last_step = now, step
    parts = " ".join(f"{k}={float(np.asarray(metrics[k])):.4f}"
                     for k in ("loss", "focal", "dice", "iou_mse", "iou_first", "iou_last")
                     if k in metrics)
    print(f"[train] step {step}/{self.total_steps} {parts} lr={lr:.2e}{rate}{eta}",
          flush=True)

  def info(self, msg: str):
    if self.enabled:
      print(msg, flush=True)

  def close(self):
    """Closes the files (everything is flushed already; a bucket's last event
    file is uploaded once more, complete)."""
    if self._metrics is not None:
      self._metrics.close()
    if self._events is not None:
      self._events.close()


def _fmt(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

"""Run logging: console lines, metrics.jsonl and TensorBoard (process 0 only)."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from samjax import formats


class RunLogger:
  def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
    self.enabled = enabled
    self.total_steps = total_steps
    self._t0 = time.time()
    self._last_time, self._last_step = None, None
    self.workdir = workdir
    self.writer = None
    self._jsonl = None

  def _open(self):
    """Files open at the first write: a run that fails before it (e.g. a
    config that does not fit the workdir) leaves no trace in the workdir."""
    if self._jsonl is not None:
      return
    os.makedirs(self.workdir, exist_ok=True)
    self._jsonl = open(os.path.join(self.workdir, formats.METRICS), "a")  # noqa: SIM115 - open for the run
    try:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(os.path.join(self.workdir, formats.TENSORBOARD))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      self.writer = None

  def scalars(self, step: int, metrics: dict, prefix: str = "train"):
    if not self.enabled:
      return
    self._open()
    clean = {k: float(np.asarray(v)) for k, v in metrics.items()
             if not k.startswith("_") and np.ndim(v) == 0}
    self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **clean}) + "\n")
    self._jsonl.flush()
    if self.writer is not None:
      for k, v in clean.items():
        self.writer.add_scalar(f"{prefix}/{k}", v, int(step))

  def image(self, step: int, tag: str, image_hwc_uint8):
    if self.enabled:
      self._open()
    if self.enabled and self.writer is not None:
      self.writer.add_image(tag, image_hwc_uint8, int(step), dataformats="HWC")

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
    if self._jsonl:
      self._jsonl.close()
    if self.writer is not None:
      self.writer.close()


def _fmt(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

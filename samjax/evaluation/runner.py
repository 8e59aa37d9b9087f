"""The loop every protocol shares: images -> per-image log -> metrics -> results file.

Each finished image is stored in the per-image log (``per_image_log``: one
file per image, local or in a bucket) before the next one starts; a rerun
with the same ``out`` and settings skips the images already there. The
metrics are computed from the log's records of the selected images only, so
an interrupted-and-resumed run writes the same numbers as an uninterrupted
one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from samjax.evaluation import results
from samjax.evaluation.per_image_log import PerImageLog, log_path_for


def _duration(seconds: float) -> str:
  seconds = round(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
  """``<protocol>: 30/500 images, 2.31 img/s, ETA 3m23s`` on a stream, at
  most every ``interval`` seconds (and after the last image)."""

  def __init__(self, name: str, total: int, stream=None, interval: float = 10.0):
    self.name, self.total, self.interval = name, total, interval
    self.stream = stream or sys.stderr
    self.start = self.last = time.monotonic()
    self.done = 0

  def step(self) -> None:
    self.done += 1
    now = time.monotonic()
    if now - self.last < self.interval and self.done < self.total:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate
    print(f"{self.name}: {self.done}/{self.total} images, {rate:.2f} img/s, "
          f"ETA {_duration(eta)}", file=self.stream, flush=True)


def run_protocol(*, protocol: str, out: str, settings: dict, model: dict,
                 image_ids: list, summarize: Callable[[list[dict]], dict],
                 count_masks: Callable[[dict], int],
                 evaluate_image: Callable[[object], dict] | None = None,
                 evaluate_images: Callable[[list, Callable[[object, dict], None]], None]
                 | None = None,
                 extra: dict | None = None, progress: bool = True, stream=None) -> dict:
  """Evaluates ``image_ids`` (resuming), writes ``out``, returns its document.

  Args:
    settings: everything that changes the numbers (protocol flags, model,
      data); a log made with other settings is refused.
    model: ``results.model_info`` of the evaluated model.
    summarize: the selected images' records (in ``image_ids`` order) -> metrics.
    count_masks: a record -> how many masks it scored.
    evaluate_image: image id -> its JSON-serialisable record, or, for a
      protocol that finishes images out of order (scoring in worker
      processes), ``evaluate_images(todo, emit)`` calling ``emit(id, record)``
      once per image as each is ready. Exactly one of the two.
    extra: more keys for the results document.
  """
  if (evaluate_image is None) == (evaluate_images is None):
    raise TypeError("give exactly one of evaluate_image / evaluate_images")
  stream = stream or sys.stderr  # looked up now: tests and callers may swap it
  log = PerImageLog(log_path_for(out), {"protocol": protocol, "model": model, **settings})
  todo = [i for i in image_ids if i not in log]
  if progress and len(todo) < len(image_ids):
    print(f"{protocol}: resuming, {len(image_ids) - len(todo)} of {len(image_ids)} "
          f"images already in {log.path}", file=stream, flush=True)
  bar = Progress(protocol, len(todo), stream) if progress and todo else None

  def emit(image_id, record: dict) -> None:
    log.append(image_id, record)
    if bar:
      bar.step()

  start = time.monotonic()
  if evaluate_images is not None:
    if todo:
      evaluate_images(todo, emit)
  else:
    for image_id in todo:
      emit(image_id, evaluate_image(image_id))
  seconds = time.monotonic() - start
  by_id = {r["image"]: r for r in log.records()}
  records = [by_id[str(i)] for i in image_ids]
  metrics = summarize(records)
  doc = results.results_document(protocol, settings, model, metrics, len(records),
                                 sum(count_masks(r) for r in records))
  # This run's share (a resumed run evaluated only the images left).
  doc["this_run"] = {"images_evaluated": len(todo), "seconds": round(seconds, 3)}
  doc["per_image_log"] = log.path
  doc.update(extra or {})
  results.write_results(out, doc)
  return doc

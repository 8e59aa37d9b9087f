"""The loop every protocol shares: images -> per-image log -> metrics -> results file.

Each finished image is stored in the per-image log (``per_image_log``: one
file per image, local or in a bucket) before the next one starts; a rerun
with the same ``out`` and settings skips the images already there. The
metrics are computed from the log's records of the selected images only, so
an interrupted-and-resumed run writes the same numbers as an uninterrupted
one.

On several processes (``samjax.inference.process_group``) each evaluates its
share of the images (image i of the list to process i % N) into the same
per-image log; process 0 waits for all of them, then computes the metrics
from every image's record, exactly as one process would, and is the only
one to write the results file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from samjax.evaluation import results
from samjax.evaluation.per_image_log import PerImageLog, log_path_for
from samjax.inference import process_group
from samjax.inference.process_group import ProcessGroup


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
                 extra: dict | None = None, progress: bool = True, stream=None,
                 group: ProcessGroup | None = None) -> dict | None:
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
    group: the processes of this run (default: ``process_group.current()``).
      Each evaluates its share of ``image_ids`` into the shared per-image
      log; process 0 waits for all, then reads every image's record and
      writes ``out`` (``summarize`` runs there only) and returns the
      document; the other processes write no results and return None.
  """
  if (evaluate_image is None) == (evaluate_images is None):
    raise TypeError("give exactly one of evaluate_image / evaluate_images")
  stream = stream or sys.stderr  # looked up now: tests and callers may swap it
  group = group or process_group.current()
  mine = group.share(image_ids)
  keys = {str(i) for i in mine}
  with group.reporting_errors("eval"):
    log = PerImageLog(log_path_for(out), {"protocol": protocol, "model": model, **settings},
                      owns=keys.__contains__ if group.several else None)
    todo = [i for i in mine if i not in log]
    if progress:
      _announce(protocol, group, len(image_ids), len(mine), len(todo), log.path, stream)
    name = f"{protocol}: {group.label}" if group.several else protocol
    bar = Progress(name, len(todo), stream) if progress and todo else None
    seconds = _evaluate(todo, log, bar, evaluate_image, evaluate_images)
  runs = group.exchange("eval", {"images_evaluated": len(todo), "seconds": seconds})
  _check_peers(runs, group)  # every process sees every summary: all stop together
  if group.index != 0:
    return _await_results(group, out)
  with group.reporting_errors("eval-results"):
    if group.several:
      log.refresh()  # every process's images, now that all have finished
    by_id = {r["image"]: r for r in log.records()}
    records = [by_id[str(i)] for i in image_ids]
    metrics = summarize(records)
    doc = results.results_document(protocol, settings, model, metrics, len(records),
                                   sum(count_masks(r) for r in records))
    doc["this_run"] = _this_run(runs)
    doc["per_image_log"] = log.path
    doc.update(extra or {})
    results.write_results(out, doc)
  group.exchange("eval-results", {})
  return doc


def _announce(protocol: str, group: ProcessGroup, total: int, mine: int, todo: int,
              log_path: str, stream) -> None:
  """Says what this process does: its share, and what a resumed run skips."""
  if group.several:
    print(f"{protocol}: {group.label}: {mine} of {total} images ({mine - todo} already in "
          f"{log_path})", file=stream, flush=True)
  elif todo < total:
    print(f"{protocol}: resuming, {total - todo} of {total} images already in {log_path}",
          file=stream, flush=True)


def _evaluate(todo: list, log: PerImageLog, bar: Progress | None, evaluate_image,
              evaluate_images) -> float:
  """Evaluates ``todo`` into ``log``, each image stored once finished; seconds taken."""
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
  return time.monotonic() - start


def _this_run(runs: list[dict]) -> dict:
  """This run's share of the work (a resumed run evaluated only the images
  left): images evaluated by all processes, seconds of the slowest."""
  this_run = {"images_evaluated": sum(r["images_evaluated"] for r in runs),
              "seconds": round(max(r["seconds"] for r in runs), 3)}
  if len(runs) > 1:
    this_run["processes"] = len(runs)
  return this_run


class ProcessFailed(RuntimeError):
  """Another process of the run stopped; the results cannot be complete."""


def _check_peers(runs: list[dict], group: ProcessGroup) -> None:
  """Raises ProcessFailed naming every process that stopped on an error."""
  failed = process_group.failures(runs)
  if failed:
    names = "; ".join(f"process {i}/{group.count}: {e}" for i, e in failed)
    raise ProcessFailed(f"{names}. No results written; rerun the same command (on any "
                        "number of processes) to evaluate the images left")


def _await_results(group: ProcessGroup, out: str) -> None:
  """Waits until process 0 has written ``out`` (so that all processes shut
  down together); raises ProcessFailed if it could not."""
  outcome = group.exchange("eval-results", {})[0]
  if outcome.get("error"):
    raise ProcessFailed(f"process 0/{group.count} wrote no {out}: {outcome['error']}")
  return None

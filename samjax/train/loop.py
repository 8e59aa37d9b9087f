"""``train_and_evaluate(config, workdir)``: the training loop behind ``samjax train``.

Read it top to bottom:

  setup     ``start_run``: the program (model, mesh, shardings, jitted steps;
            ``setup.py``), logger, checkpointer and train iterator.
  state     ``restore_or_init``: the latest checkpoint (state + data-iterator
            position) or a fresh state, evaluated once before training.
  steps     ``train_steps``: one jitted, sharded step per global batch; the
            host reads a step's metrics only after dispatching the next one.
  periodic  ``after_step``: checkpoint, preemption, fault injection, held-out
            evaluation, each when ``itstime``.
  finish    ``finish_run``: the last metrics, the final evaluation,
            ``final_metrics.json``.

A non-finite loss or parameter stops the run before anything is saved, so
the newest checkpoint is always one a finite loss vouched for.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import atomic_io, storage
from samjax import __version__, formats
from samjax.mesh import maybe_initialize_distributed
from samjax.train.checkpointing import Checkpointer
from samjax.train.evaluation import evaluate_and_log
from samjax.train.faults import maybe_inject, maybe_poison_params
from samjax.train.init import make_init_params
from samjax.train.input import train_iterator
from samjax.train.logging_utils import RunLogger
from samjax.train.preemption import PreemptionWatch
from samjax.train.setup import TrainProgram, build_model, build_program

__all__ = ["NonFiniteLossError", "build_model", "train_and_evaluate"]


class NonFiniteLossError(RuntimeError):
  pass


def itstime(step: int, every: int | None, total: int | None = None) -> bool:
  """Every ``every`` steps (0 / None: never) and, given ``total``, at the last step."""
  return (bool(every) and step % every == 0) or (total is not None and step == total)


@dataclasses.dataclass
class Run:
  """What the loop's functions share: one training run in one workdir."""
  config: object
  workdir: str
  program: TrainProgram
  log: RunLogger
  ckpt: Checkpointer
  preemption: PreemptionWatch
  train_iter: object
  results: dict = dataclasses.field(default_factory=dict)
  t_start: float = 0.0
  pending: tuple | None = None  # (step, device metrics) the host has not read yet


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per ``config`` (``samjax.configs``) in ``workdir``; returns the final
  held-out metrics (the initial ones under ``initial_*``), or
  ``{"preempted_at": step}`` after a preemption save.

  ``workdir`` may be local or ``gs://``; ``s3://`` is refused before anything
  is written (``storage.check_checkpoint_location``: orbax cannot checkpoint there).
  """
  workdir = storage.check_checkpoint_location(workdir)
  maybe_initialize_distributed()
  run = start_run(config, workdir)
  try:
    with run.program.context():
      state = restore_or_init(run)
      state, stopped = train_steps(run, state)
      if stopped:
        return {"preempted_at": int(jax.device_get(state["step"]))}
      finish_run(run, state)
  finally:
    run.preemption.restore_default_handlers()
    run.ckpt.close()
    run.log.close()
  return run.results


# --- setup ---------------------------------------------------------------------------

def start_run(config, workdir: str) -> Run:
  """Builds everything before the first step; refuses a workdir that holds
  another model before writing anything into it."""
  main = jax.process_index() == 0
  model_config = build_model(config).config
  if formats.is_workdir(workdir):
    found = formats.read_model_config(workdir)
    if not found.same_architecture(model_config):
      raise ValueError(f"{workdir} holds a run of {found.describe()}, but the config "
                       f"builds {model_config.describe()}; use another --workdir")
  # Local: creates the folder and checks it is writable; bucket: checks the
  # bucket exists. One clear error before any compilation.
  atomic_io.ensure_dir(workdir)
  # Opens its files at the first write, after a successful restore.
  log = RunLogger(workdir, config.total_steps, enabled=main)
  program = build_program(
      config, make_init=lambda model: make_init_params(config.init, model, log=log.info),
      log=log.info)
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints,
                      async_save=config.async_checkpoints)
  return Run(config, workdir, program, log, ckpt, PreemptionWatch(), train_iterator(program))


def _code_version() -> str:
  try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=storage.dirname(__file__), timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    rev = ""
  return f"samjax {__version__}" + (f" (git {rev})" if rev else "")


def _write_run_metadata(config, workdir: str, program: TrainProgram) -> None:
  """config.json (resolved config, seed, code version) and the model config
  that lets ``samjax.load_sam(workdir)`` rebuild the model."""
  atomic_io.write_json(
      storage.join(workdir, formats.RUN_CONFIG),
      {"config": json.loads(config.to_json_best_effort()), "seed": config.seed,
       "code_version": _code_version(), "jax": jax.__version__,
       "devices": jax.device_count(), "processes": jax.process_count()},
      indent=2, sort_keys=True)
  formats.write_model_metadata(storage.join(workdir, formats.WORKDIR_MODEL_CONFIG),
                               program.model.config, source="samjax train")


# --- state ---------------------------------------------------------------------------

def restore_or_init(run: Run) -> dict:
  """The newest checkpoint that restores onto this run's shardings, or a fresh
  state. The run's metadata is written only once that has succeeded, so a
  config that does not fit the workdir's checkpoints leaves it untouched."""
  step, state = run.ckpt.restore_newest(run.program.abstract_state, run.train_iter,
                                        log=run.log.info)
  run.log.begin(step)  # drops what a killed run logged after ``step`` (process 0)
  if jax.process_index() == 0:
    _write_run_metadata(run.config, run.workdir, run.program)
  if step is not None:
    run.log.info(f"[train] resumed from step {step} in {run.workdir}")
    return state
  state = run.program.init_state(jax.random.PRNGKey(run.config.seed))
  if run.config.eval_at_start:
    m = evaluate_and_log(run.program, run.log, 0, state["params"], " (before training)")
    run.results.update({f"initial_{k}": v for k, v in m.items() if np.ndim(v) == 0})
  return state


# --- steps ---------------------------------------------------------------------------

def train_steps(run: Run, state: dict) -> tuple[dict, bool]:
  """Steps until ``total_steps``; returns (state, stopped early for preemption)."""
  step = int(jax.device_get(state["step"]))
  run.t_start = time.time()
  while step < run.config.total_steps:
    state, metrics = run.program.train_step(state, next(run.train_iter))
    step += 1
    state = maybe_poison_params(step, state)
    if run.pending is not None:  # the previous step's metrics: ready by now
      log_train_metrics(run, run.pending)
    run.pending = (step, metrics)
    if after_step(run, step, state):
      return state, True
  return state, False


def read_metrics(run: Run, pending) -> dict:
  """Host copy of a step's metrics; raises on a non-finite loss."""
  step, metrics = pending
  m = jax.device_get(metrics)
  if not np.isfinite(m["loss"]):
    raise NonFiniteLossError(
        f"non-finite loss {m['loss']} at step {step}; stopping without saving. The last "
        f"good checkpoint (step {run.ckpt.latest_step()}) in {run.ckpt.directory} is intact.")
  return m


def log_train_metrics(run: Run, pending, force: bool = False) -> None:
  """Logs a step's metrics if due (``log_every``, step 1, or ``force``); always
  reads them, so a non-finite loss stops the run (``read_metrics``)."""
  step = pending[0]
  m = read_metrics(run, pending)
  if force or step == 1 or itstime(step, run.config.log_every):
    lr = float(run.program.schedule(step - 1))
    m["records_skipped"] = run.train_iter.records_skipped  # this process's count
    run.log.console(step, m, lr, run.program.global_batch_size)
    run.log.scalars(step, {**m, "lr": lr})


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


# --- periodic actions ----------------------------------------------------------------

def after_step(run: Run, step: int, state: dict) -> bool:
  """Checkpoint / preemption / fault injection / eval after ``step``; True = stop."""
  cfg, ckpt = run.config, run.ckpt
  preempted = run.preemption.reached(step)  # every process, every step: collective
  if itstime(step, cfg.checkpoint_every, cfg.total_steps) or preempted:
    # Logged before the save, never after it: a kill between the two must not
    # lose this step's record (the resumed run starts after it).
    log_train_metrics(run, run.pending, force=preempted)
    run.pending = None
    if not bool(_all_finite(state["params"])):
      raise NonFiniteLossError(
          f"non-finite parameters after step {step}; stopping without saving. The last "
          f"good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is intact.")
    ckpt.save(step, state, run.train_iter, force=True)
  if preempted:
    ckpt.wait()
    run.log.info(f"[train] preemption notice (SIGTERM / Ctrl-C): saved step {step}, exiting")
    return True
  maybe_inject(step, flush=ckpt.wait)
  if itstime(step, cfg.eval_every) and step < cfg.total_steps:
    evaluate_and_log(run.program, run.log, step, state["params"], "")
  return False


# --- finish --------------------------------------------------------------------------

def finish_run(run: Run, state: dict) -> None:
  """Last metrics, final evaluation, ``final_metrics.json`` (process 0)."""
  if run.pending is not None:
    log_train_metrics(run, run.pending, force=True)
  run.ckpt.wait()
  total = run.config.total_steps
  run.log.info(f"[train] {total} steps done in {time.time() - run.t_start:.0f}s")
  m = evaluate_and_log(run.program, run.log, total, state["params"], " (after training)")
  run.results.update({k: v for k, v in m.items() if np.ndim(v) == 0})
  if jax.process_index() == 0:
    _write_final_metrics(run.workdir, run.results)


def _write_final_metrics(workdir: str, results: dict) -> None:
  """Keeps earlier runs' keys (e.g. the first run's ``initial_*``) a rerun lacks."""
  path = storage.join(workdir, formats.FINAL_METRICS)
  merged = {}
  if storage.isfile(path):
    try:
      merged = json.loads(storage.read_text(path))
    except (OSError, ValueError):  # a damaged file: this run's numbers replace it
      merged = {}
  merged.update({k: float(v) for k, v in results.items()})
  atomic_io.write_json(path, merged, indent=2, sort_keys=True)

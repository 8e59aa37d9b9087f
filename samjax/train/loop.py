"""``train_and_evaluate(config, workdir)``: the training loop behind ``samjax train``.

One jitted, sharded train step over a (data, fsdp, model) mesh; grain input
on every process; orbax checkpoints of state + iterator every
``checkpoint_every`` steps, on SIGTERM and at the end; automatic resume from
the latest checkpoint; held-out evaluation (IoU after 1 click and after the
last corrective click) before training, every ``eval_every`` steps and at the
end; a non-finite loss stops the run before anything is saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax import __version__
from samjax.logical_axes import DEFAULT_LOGICAL_RULES
from samjax.mesh import (
  batch_sharding,
  make_mesh,
  maybe_initialize_distributed,
  param_shardings,
  state_shardings,
)
from samjax.model.sam import build
from samjax.train.checkpointing import Checkpointer
from samjax.train.init import make_init_params
from samjax.train.interactive import InteractiveConfig
from samjax.train.logging_utils import RunLogger
from samjax.train.optimizer import make_optimizer
from samjax.train.step import make_eval_step, make_train_step

MODEL_CONFIG = "model_config.json"


class NonFiniteLossError(RuntimeError):
  pass


def _code_version() -> str:
  try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(__file__), timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    rev = ""
  return f"samjax {__version__}" + (f" (git {rev})" if rev else "")


def build_model(config):
  overrides = dict(config.model.get("overrides", {}))
  return build(config.model.variant, **overrides)


def _pipeline_config(config, model, data_dir, batch_size, seed, shuffle=True,
                     num_epochs=None, max_masks=None):
  from data_pipelines.pipeline import PipelineConfig
  return PipelineConfig(
      data_dir=data_dir, batch_size=batch_size, image_size=model.config.image_size,
      gt_size=model.config.mask_input_size, max_masks=max_masks or config.data.max_masks,
      seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.get("worker_count", 0))


def _to_global(batch, sharding):
  from data_pipelines.global_batch import to_global
  keep = ("image", "masks", "boxes", "valid", "image_size")
  return to_global({k: batch[k] for k in keep}, sharding.mesh,
                   batch_axes=tuple(sharding.spec[0]) if isinstance(sharding.spec[0], tuple)
                   else (sharding.spec[0],))


def evaluate(config, model, params, mesh, bsharding, eval_step, max_batches=None):
  """Mean metrics over the held-out set (one pass, fixed prompts)."""
  from data_pipelines.pipeline import make_iterator
  if not config.data.get("eval_dir"):
    return {}
  cfg = _pipeline_config(config, model, config.data.eval_dir,
                         config.data.eval_batch_size // jax.process_count(),
                         seed=0, shuffle=False, num_epochs=1,
                         # The held-out masks stay fixed when training's K changes.
                         max_masks=config.data.get("eval_max_masks"))
  sums, n = {}, 0
  first = None
  for i, batch in enumerate(make_iterator(cfg)):
    if max_batches is not None and i >= max_batches:
      break
    if batch["image"].shape[0] * jax.process_count() != config.data.eval_batch_size:
      break  # drop a ragged tail batch: shapes stay fixed
    first = batch if first is None else first
    m = eval_step(params, _to_global(batch, bsharding), jax.random.PRNGKey(1234 + i))
    m = jax.device_get(m)
    w = float(m["num_masks"])
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64) * (w if k != "num_masks" else 1)
    n += w
  if n == 0:
    return {}
  out = {k: (v / n if k != "num_masks" else v) for k, v in sums.items()}
  if first is not None and jax.process_count() == 1:  # params fully addressable
    from samjax.train.summaries import prediction_panel
    try:
      out["_panel"] = prediction_panel(model, jax.device_get(params), first)
    except Exception as e:
      print(f"[eval] image summary skipped: {type(e).__name__}: {e}", flush=True)
  return out


def eval_summary(m) -> str:
  """One line of held-out metrics: 1-click (confident and oracle) and last-click mIoU."""
  return (f"1-click mIoU {m['iou_first']:.4f} (oracle {m['iou_first_oracle']:.4f}), "
          f"last-click mIoU {m['iou_last']:.4f} over {int(m['num_masks'])} masks")


def _log_panel(log, step, metrics):
  panel = metrics.pop("_panel", None)
  if panel is not None:
    log.image(step, "eval/gt_vs_1click", panel)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per ``config`` (see experiments/configs/) in ``workdir``; returns
  the final held-out metrics (and the initial ones under ``initial_*``)."""
  from data_pipelines.pipeline import make_iterator
  maybe_initialize_distributed()
  main = jax.process_index() == 0
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  log = RunLogger(workdir, config.total_steps, enabled=main)
  if main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({"config": json.loads(config.to_json_best_effort()), "seed": config.seed,
                 "code_version": _code_version(),
                 "jax": jax.__version__, "devices": jax.device_count(),
                 "processes": jax.process_count()}, f, indent=2, sort_keys=True)

  model = build_model(config)
  if main:  # lets samjax.load_sam(workdir) rebuild the model from a checkpoint
    with open(os.path.join(workdir, MODEL_CONFIG), "w") as f:
      f.write(model.config.to_json())
  mesh = make_mesh(tuple(config.mesh.shape))
  rules = tuple(tuple(r) for r in config.get("logical_rules", DEFAULT_LOGICAL_RULES))
  sim = InteractiveConfig(**dict(config.sim))
  shapes = model.param_shapes()
  tx, schedule = make_optimizer(shapes, model.config, **dict(config.optim))
  init_params = make_init_params(config.init, model, log=log.info)
  seed_key = jax.random.PRNGKey(config.seed)

  def init_state(rng):
    params = init_params(rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "rng": rng}

  abstract = jax.eval_shape(init_state, seed_key)
  shardings = state_shardings(abstract, param_shardings(model, mesh, rules), mesh)
  bsharding = batch_sharding(mesh, tuple(config.get("batch_axes", ("data", "fsdp"))))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  global_batch = config.data.batch_size
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} not divisible by {jax.process_count()} "
                     "processes")
  train_iter = make_iterator(_pipeline_config(
      config, model, config.data.train_dir, global_batch // jax.process_count(),
      seed=config.seed))
  ckpt = Checkpointer(workdir, keep=config.get("keep_checkpoints", 3),
                      async_save=config.get("async_checkpoints", True))
  ckpt.install_preemption_handler()

  results = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    eval_step = jax.jit(make_eval_step(model, sim, config.get("prompt_chunk")),
                        in_shardings=(shardings["params"], bsharding, replicated))
    latest = ckpt.latest_step()
    if latest is not None:
      target = jax.tree_util.tree_map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
      state = ckpt.restore(latest, target, train_iter)
      log.info(f"[train] resumed from step {latest} in {workdir}")
    else:
      state = jax.jit(init_state, out_shardings=shardings)(seed_key)
      if config.get("eval_at_start", True):
        m = evaluate(config, model, state["params"], mesh, bsharding, eval_step,
                     config.get("eval_batches"))
        if m:
          results.update({f"initial_{k}": v for k, v in m.items() if np.ndim(v) == 0})
          log.info(f"[eval] step 0 (before training): {eval_summary(m)}")
          log.scalars(0, m, "eval")
          _log_panel(log, 0, m)

    train_step = jax.jit(make_train_step(model, tx, sim, config.get("prompt_chunk")),
                         in_shardings=(shardings, bsharding),
                         out_shardings=(shardings, replicated), donate_argnums=(0,))
    step = int(jax.device_get(state["step"]))
    pending = None  # metrics of the previous step, checked after dispatching the next
    t_start = time.time()

    params_finite = jax.jit(lambda p: jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(p)])))

    def check_params(step):
      if not bool(params_finite(state["params"])):
        raise NonFiniteLossError(
            f"non-finite parameters after step {step}; stopping without saving. The last "
            f"good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is intact.")

    def check(pending):
      s, m = pending
      m = jax.device_get(m)
      if not np.isfinite(m["loss"]):
        raise NonFiniteLossError(
            f"non-finite loss {m['loss']} at step {s}; stopping without saving. The last "
            f"good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is intact.")
      return m

    while step < config.total_steps:
      batch = _to_global(next(train_iter), bsharding)
      state, metrics = train_step(state, batch)
      step += 1
      if pending is not None:
        s_prev, _ = pending
        m_prev = check(pending)
        if s_prev % config.log_every == 0 or s_prev == 1:
          log.console(s_prev, m_prev, float(schedule(s_prev - 1)), global_batch)
          log.scalars(s_prev, {**m_prev, "lr": float(schedule(s_prev - 1))})
      pending = (step, metrics)
      if step % config.checkpoint_every == 0 or step == config.total_steps or ckpt.preempted:
        check(pending)
        check_params(step)  # never save a state a finite loss cannot vouch for
        ckpt.save(step, state, train_iter, force=True)
      if ckpt.preempted:
        ckpt.wait()
        log.info(f"[train] SIGTERM: saved step {step}, exiting")
        log.close()
        return {"preempted_at": step}
      if config.get("testing_kill_at_step") and step == config.testing_kill_at_step:
        # Tests of exact resume: die like a preempted VM, no cleanup at all.
        ckpt.wait()
        os.kill(os.getpid(), 9)
      if config.get("eval_every") and step % config.eval_every == 0 and step < config.total_steps:
        m = evaluate(config, model, state["params"], mesh, bsharding, eval_step,
                     config.get("eval_batches"))
        if m:
          log.info(f"[eval] step {step}: {eval_summary(m)}")
          log.scalars(step, m, "eval")
          _log_panel(log, step, m)
    if pending is not None:
      m_last = check(pending)
      log.console(pending[0], m_last, float(schedule(pending[0] - 1)), global_batch)
      log.scalars(pending[0], m_last)
    ckpt.wait()
    log.info(f"[train] {config.total_steps} steps done in {time.time() - t_start:.0f}s")
    m = evaluate(config, model, state["params"], mesh, bsharding, eval_step,
                 config.get("eval_batches"))
    if m:
      results.update({k: v for k, v in m.items() if np.ndim(v) == 0})
      log.info(f"[eval] step {step} (after training): {eval_summary(m)}")
      log.scalars(step, m, "eval")
      _log_panel(log, step, m)
  ckpt.close()
  log.close()
  if main:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump({k: float(v) for k, v in results.items()}, f, indent=2, sort_keys=True)
  return results

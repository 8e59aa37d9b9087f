"""Everything a training run needs before its first step, built from the config.

``build_program(config)`` returns a ``TrainProgram``: the model, the mesh and
its logical-axis rules, the optimizer, the abstract train state with its
shardings and the jitted train/eval steps. ``samjax train`` runs it;
``samjax plan`` lowers exactly the same jitted step for devices that are not
there (TPU topologies compiled on a CPU host), so what is planned is what
runs.

Nothing here materialises parameters: shapes come from ``jax.eval_shape``
and the state is created by ``TrainProgram.init_state`` with
``out_shardings``, so every leaf is born sharded.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from samjax.configs.schema import model_overrides
from samjax.logical_axes import DEFAULT_LOGICAL_RULES, validate_rules
from samjax.mesh import (
  batch_shard_count,
  batch_sharding,
  make_mesh,
  param_shardings,
  replicated_large_leaves,
  state_shardings,
)
from samjax.model.sam import SamModel, build
from samjax.train.interactive import InteractiveConfig
from samjax.train.microbatch import resolve_microbatches
from samjax.train.optimizer import make_optimizer
from samjax.train.step import make_eval_step, make_train_step

# What the train/eval steps read from a pipeline batch (the rest is host-side
# bookkeeping such as image ids and skip counts).
BATCH_KEYS = ("image", "masks", "boxes", "valid", "image_size")


def abstract_batch(batch_size: int, image_size: int, gt_size: int, max_masks: int,
                   sharding=None) -> dict:
  """ShapeDtypeStructs of a train batch: image [B, S, S, 3] uint8, masks
  [B, K, G, G] uint8, boxes [B, K, 4] float32, valid [B, K] bool,
  image_size [B, 2] int32 (the pipeline's dtypes)."""
  b, s, g, k = batch_size, image_size, gt_size, max_masks
  spec = {"image": ((b, s, s, 3), jnp.uint8), "masks": ((b, k, g, g), jnp.uint8),
          "boxes": ((b, k, 4), jnp.float32), "valid": ((b, k), jnp.bool_),
          "image_size": ((b, 2), jnp.int32)}
  return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for name, (shape, dtype) in spec.items()}


def build_model(config) -> SamModel:
  """The SamModel of ``config.model`` (variant + compute overrides)."""
  return build(config.model.variant, **model_overrides(config))


@dataclasses.dataclass
class TrainProgram:
  """The jitted pieces of a run and the shardings they agree on.

  State pytree: {"step": int32 [], "params", "opt_state", "rng": key [2]}.
  Batch: ``BATCH_KEYS`` with a leading global batch dimension (see
  ``samjax.train.step``).
  """
  config: object
  model: SamModel
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: object
  schedule: Callable[[int], float]
  init_state_fn: Callable            # rng -> state (pure; jit with out_shardings)
  abstract_state: dict               # ShapeDtypeStructs carrying their shardings
  state_shardings: dict
  batch_sharding: NamedSharding
  replicated: NamedSharding
  train_step: Callable               # jitted (state, batch) -> (state, metrics), donates state
  eval_step: Callable                # jitted (params, batch, rng) -> metrics
  microbatches: int = 1              # sequential microbatches per train step

  @contextlib.contextmanager
  def context(self):
    """Mesh + logical-axis rules: trace, lower and run the steps inside it."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  @property
  def global_batch_size(self) -> int:
    return int(self.config.data.batch_size)

  def init_state(self, rng) -> dict:
    """The initial state, created directly in its shardings."""
    return jax.jit(self.init_state_fn, out_shardings=self.state_shardings)(rng)

  def abstract_batch(self, batch_size: int | None = None) -> dict:
    """ShapeDtypeStructs of a global train batch, with the batch sharding."""
    b = self.global_batch_size if batch_size is None else batch_size
    cfg = self.model.config
    return abstract_batch(b, cfg.image_size, cfg.mask_input_size,
                          int(self.config.data.max_masks), sharding=self.batch_sharding)


def build_program(config, devices=None, make_init: Callable | None = None,
                  log: Callable[[str], None] | None = None) -> TrainProgram:
  """Model, mesh, optimizer, shardings and jitted steps for ``config``.

  Args:
    config: an experiment config (``samjax.configs``).
    devices: the devices of the mesh (default: ``jax.devices()``); ``samjax
      plan`` passes the devices of a TPU topology.
    make_init: ``model -> (rng -> params)`` (default: the model's own
      initialisation, enough for shapes; the loop passes
      ``samjax.train.init.make_init_params`` for ``config.init``).
    log: gets the line saying how the mesh's devices are ordered.
  """
  model = build_model(config)
  mesh = make_mesh(tuple(config.mesh.shape), devices, tuple(config.mesh.get("dcn", (-1, 1, 1))),
                   log=log)
  batch_axes = tuple(config.batch_axes)
  # Checked before any tracing: a batch the mesh cannot split fails in a line.
  microbatches = resolve_microbatches(
      int(config.microbatches), int(config.data.batch_size),
      batch_shard_count(mesh, batch_axes),
      f"of batch axes {batch_axes} (mesh {dict(mesh.shape)})")
  rules = validate_rules(config.logical_rules or DEFAULT_LOGICAL_RULES)
  sim = InteractiveConfig(**dict(config.sim))
  tx, schedule = make_optimizer(model.param_shapes(), model.config, **dict(config.optim))
  init_params = model.init if make_init is None else make_init(model)

  def init_state_fn(rng):
    params = init_params(rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "rng": rng}

  shapes = jax.eval_shape(init_state_fn, jax.random.PRNGKey(0))
  shardings = state_shardings(shapes, param_shardings(model, mesh, rules), mesh)
  replicated_big = replicated_large_leaves(shapes, shardings, mesh, config.min_sharded_bytes)
  if replicated_big:
    raise ValueError(
        f"{len(replicated_big)} large state leaves would be replicated on every device of "
        f"mesh {dict(mesh.shape)} (logical rules map none of their axes to fsdp/model): "
        + "; ".join(replicated_big[:5]) + (" ..." if len(replicated_big) > 5 else "")
        + ". Fix config.logical_rules, or raise config.min_sharded_bytes (0 = no check)")
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
  bsharding = batch_sharding(mesh, batch_axes)
  replicated = NamedSharding(mesh, PartitionSpec())
  chunk = config.prompt_chunk
  form = config.decoder_form
  train_step = jax.jit(make_train_step(model, tx, sim, chunk, microbatches, bsharding,
                                       shardings["params"], decoder_form=form),
                       in_shardings=(shardings, bsharding),
                       out_shardings=(shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(model, sim, chunk, decoder_form=form),
                      in_shardings=(shardings["params"], bsharding, replicated))
  return TrainProgram(config=config, model=model, mesh=mesh, rules=rules, tx=tx,
                      schedule=schedule, init_state_fn=init_state_fn,
                      abstract_state=abstract, state_shardings=shardings,
                      batch_sharding=bsharding, replicated=replicated,
                      train_step=train_step, eval_step=eval_step,
                      microbatches=microbatches)

"""The train and eval steps: pure functions over a plain state pytree.

State: {"step": int32 [], "params": params, "opt_state": optax state,
"rng": uint32 [2] base key}. The step's randomness is
``fold_in(state["rng"], step)``, so a run is a function of (config, seed)
and resumes exactly.

Batch (from ``data_pipelines``): image [B, S, S, 3] uint8 (resized, padded),
masks [B, K, G, G] uint8, boxes [B, K, 4], valid [B, K], image_size [B, 2].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from samjax.decoding.training import TrainingPlan
from samjax.model.sam import normalize_and_pad
from samjax.train.interactive import InteractiveConfig, simulate
from samjax.train.microbatch import accumulate_gradients
from samjax.train.optimizer import trainable_mask


def normalize_images(images, image_hw):
  """uint8 [B, S, S, 3] padded with zeros -> [B, 3, S, S] normalised, padding 0.

  The model's preprocessing (``normalize_and_pad``, what ``SamModel.preprocess``
  runs: the official ``Sam.preprocess``) on a batch the pipeline has padded
  already; ``image_hw`` marks each image's extent so its padding ends up 0.
  """
  return normalize_and_pad(jnp.transpose(images, (0, 3, 1, 2)), images.shape[1], image_hw)


def make_train_step(model, tx, sim: InteractiveConfig, prompt_chunk=None,
                    microbatches: int = 1, batch_sharding=None, param_shardings=None,
                    decoder_form: str = "reference"):
  """(state, batch) -> (new state, metrics). Jit it with donated state.

  The decoder passes run through ``TrainingPlan(model, decoder_form,
  prompt_chunk, sim.eager_chunk_grads)`` (``samjax.decoding.training``).

  ``microbatches`` > 1 runs the batch as that many sequential microbatches
  (``samjax.train.microbatch``: same gradient, one microbatch's activations
  and program); ``batch_sharding`` / ``param_shardings`` keep each
  microbatch and the gradient sum sharded like the batch and the params.
  """

  plan = TrainingPlan(model, decoder_form, prompt_chunk or 0, sim.eager_chunk_grads)

  def loss_fn(params, batch, rng, weight=None):
    r_drop, r_sim = jax.random.split(rng)
    images = normalize_images(batch["image"], batch["image_size"])
    emb = model.embed_images(params, images, deterministic=False,
                             rngs={"dropout": r_drop})
    loss, metrics = simulate(plan, params, emb, batch, r_sim, sim)
    return (loss if weight is None else loss * weight), metrics

  grad_fn = jax.grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    if microbatches == 1:
      grads, metrics = grad_fn(state["params"], batch, rng)
    else:
      grads, metrics = accumulate_gradients(grad_fn, state["params"], batch, rng,
                                            microbatches, batch_sharding, param_shardings)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {k: v for k, v in metrics.items() if k != "iou_per_pass"}
    metrics["grad_norm"] = optax.tree.norm(jax.tree_util.tree_map(
        lambda g, m: g * m, grads, trainable_mask(grads)))
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                 "rng": state["rng"]}
    return new_state, metrics

  return train_step


def make_eval_step(model, sim: InteractiveConfig, prompt_chunk=None,
                   decoder_form: str = "reference"):
  """(params, batch, rng) -> metrics: IoU after the first click and per pass.

  Evaluation always starts from a point (the '1-click' number); follow-ups
  are the same corrective clicks as in training.
  """
  plan = TrainingPlan(model, decoder_form, prompt_chunk or 0)

  def eval_step(params, batch, rng):
    images = normalize_images(batch["image"], batch["image_size"])
    emb = model.embed_images(params, images)
    _, metrics = simulate(plan, params, emb, batch, rng, sim, first_prompt="point")
    return metrics

  return eval_step

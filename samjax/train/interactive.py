"""SAM's interactive training simulation (paper appendix A), inside jit.

Per ground-truth mask: a first prompt (a uniform foreground point or a noisy
GT box, p = 0.5 each), then ``num_point_iters`` corrective clicks sampled
uniformly from the error region of the previous prediction (positive on
false negatives, negative on false positives) with the previous unthresholded
logits fed back as the mask prompt, plus ``num_mask_only_iters`` passes that
add no click (one at a random position among the click iterations, one
last): 1 + 8 + 2 = 11 decoder passes for the paper's settings. The first
pass uses the 3 ambiguity-aware outputs for a point (loss on the best one)
and the single output for a box; later passes (several prompts) use the
single output. The mask fed back after a multimask pass is the one with the
highest predicted IoU, as at inference.

Shapes: B images, K masks per image, G = mask-input size (256), S = model
input size (1024), N = 1 + num_point_iters point slots.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samjax.configs.schema import sim_fields
from samjax.decoding.training import TrainingPlan
from samjax.model.prompts import Prompts
from samjax.train import prompt_sampling
from samjax.train.losses import mask_iou, masked_mean, sam_loss

# The schema owns the defaults (and documents each field).
_DEFAULTS = sim_fields()


@dataclasses.dataclass(frozen=True)
class InteractiveConfig:
  """``config.sim`` as a frozen dataclass (see ``samjax.configs.schema.sim_fields``)."""
  num_point_iters: int = _DEFAULTS.num_point_iters
  num_mask_only_iters: int = _DEFAULTS.num_mask_only_iters   # 0, 1 (last) or 2
  point_prob: float = _DEFAULTS.point_prob
  box_noise_frac: float = _DEFAULTS.box_noise_frac
  box_noise_max: float = _DEFAULTS.box_noise_max
  focal_weight: float = _DEFAULTS.focal_weight
  dice_weight: float = _DEFAULTS.dice_weight
  iou_weight: float = _DEFAULTS.iou_weight
  # Read by the training plan (samjax.decoding.training), not the simulation.
  eager_chunk_grads: bool = _DEFAULTS.eager_chunk_grads

  def __post_init__(self):
    if self.num_mask_only_iters not in (0, 1, 2):
      raise ValueError("num_mask_only_iters must be 0, 1 or 2")

  @property
  def num_followups(self) -> int:
    return self.num_point_iters + self.num_mask_only_iters


def followup_schedule(rng, cfg: InteractiveConfig):
  """[num_followups] bool: True = add a click, False = mask-only pass."""
  t = cfg.num_followups
  idx = jnp.arange(t)
  add = jnp.ones((t,), bool)
  if cfg.num_mask_only_iters >= 1:
    add = add & (idx != t - 1)
  if cfg.num_mask_only_iters == 2:
    r = jax.random.randint(rng, (), 0, t - 1)  # among the first t-1 slots
    add = add & (idx != r)
  return add


def simulate(plan: TrainingPlan, params, embeddings, batch, rng, cfg: InteractiveConfig,
             first_prompt: str = "random"):
  """Runs the interactive simulation and returns (loss, metrics).

  Args:
    plan: how each decoder pass runs (decoder form, prompt chunks, eager
      chunk gradients); params: its model's params (differentiated by the
      caller).
    embeddings: [B, C, h, w] image embeddings.
    batch: dict with masks [B, K, G, G] {0,1}, boxes [B, K, 4] (S frame),
      valid [B, K] bool, image_size [B, 2] resized (h, w).
    first_prompt: 'random' (training), 'point' or 'box' (evaluation).
  Returns:
    loss (scalar, mean over passes and valid masks) and float32 metrics:
    loss parts, ``iou_first`` / ``iou_last`` (IoU of the mask a user would
    get after the first / last pass: the highest-predicted-IoU output),
    ``iou_first_oracle`` (first pass, best output against the ground truth),
    ``iou_per_pass`` [1 + followups].
  """
  model = plan.model
  gt = batch["masks"].astype(jnp.float32)
  if gt.shape[-1] != model.config.mask_input_size:
    raise ValueError(f"ground truth at {gt.shape[-1]} px but the decoder predicts "
                     f"{model.config.mask_input_size} px masks; set gt_size to match")
  valid = batch["valid"]
  r_first, r_pt, r_box, r_sched, r_loop = jax.random.split(rng, 5)

  def decode_pass(pass_prompts, mask_in, per_mask, extra):
    """One decoder pass over all K masks -> (loss, per-mask outputs).

    ``pass_prompts`` = (coords, labels, pvalid, boxes, box_valid) [B, K, ...],
    ``mask_in`` [B, K, G, G] or None, ``per_mask(logits, iou, extra)`` ->
    (loss parts dict of [B, K], outputs dict of [B, K, ...]) on any slice of
    the K masks, ``extra`` its per-mask inputs [B, K, ...]. Returns the
    pass's loss (mean over valid masks), the loss parts and the outputs.
    """
    masks = None if mask_in is None else (mask_in, jnp.ones(mask_in.shape[:2], bool))
    decoder_prompts = Prompts(*pass_prompts, *(masks or (None, None)))
    if plan.eager_chunk_grads:
      weight = valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1.0)   # [B, K]
      return plan.eager_weighted_loss(params, embeddings, decoder_prompts, per_mask, extra,
                                      weight)
    logits, iou = plan.predict_masks(params, embeddings, decoder_prompts)
    parts, out = per_mask(logits, iou, extra)
    return masked_mean(parts["loss"], valid), parts, out

  prompts = _first_prompts((r_first, r_pt, r_box), batch, gt, cfg, first_prompt,
                           model.config.image_size)
  first = _first_pass(decode_pass, prompts, gt, cfg)
  outs = _followup_passes(decode_pass, prompts, first["prev"], gt, valid, cfg,
                          (r_sched, r_loop), model.config.image_size)
  return _summarize(first, outs, valid, cfg)


def _weights(cfg: InteractiveConfig) -> dict:
  """``sam_loss``'s weights."""
  return dict(focal_weight=cfg.focal_weight, dice_weight=cfg.dice_weight,
              iou_weight=cfg.iou_weight)


def _first_prompts(keys, batch, gt, cfg: InteractiveConfig, first_prompt: str, s: int
                   ) -> dict:
  """Per mask a uniform foreground point or a noisy GT box, as decoder inputs:
  coords [B, K, N, 2], labels/pvalid [B, K, N] (slot 0 used), boxes [B, K, 4],
  box_valid and is_point [B, K]."""
  r_first, r_pt, r_box = keys
  b, k = batch["valid"].shape
  n = 1 + cfg.num_point_iters
  if first_prompt == "random":
    is_point = jax.random.bernoulli(r_first, cfg.point_prob, (b, k))
  elif first_prompt in ("point", "box"):
    is_point = jnp.full((b, k), first_prompt == "point")
  else:
    raise ValueError(f"first_prompt={first_prompt!r}")
  point, found = prompt_sampling.sample_uniform_pixel(r_pt, gt > 0.5, s)
  is_point = is_point & found
  boxes = prompt_sampling.noisy_boxes(r_box, batch["boxes"].astype(jnp.float32),
                                      batch["image_size"], cfg.box_noise_frac,
                                      cfg.box_noise_max)
  return {"is_point": is_point, "boxes": boxes, "box_valid": ~is_point,
          "coords": jnp.zeros((b, k, n, 2), jnp.float32).at[:, :, 0].set(point),
          "labels": jnp.ones((b, k, n), jnp.int32),
          "pvalid": jnp.zeros((b, k, n), bool).at[:, :, 0].set(is_point)}


def _first_pass(decode_pass, prompts, gt, cfg: InteractiveConfig) -> dict:
  """3 outputs for a point (loss on the best), the single output for a box.
  Returns the pass's ``loss``, loss parts, the fed-back logits ``prev``
  [B, K, G, G] and the IoUs of the confident (``iou0``) and best
  (``oracle0``) output, [B, K]."""
  w = _weights(cfg)

  def per_mask(logits, iou, extra):
    gt, is_point = extra
    multi, _ = sam_loss(logits[:, :, 1:], iou[:, :, 1:], gt, **w)
    single, _ = sam_loss(logits[:, :, :1], iou[:, :, :1], gt, **w)
    parts = jax.tree_util.tree_map(lambda a, c: jnp.where(is_point, a, c), multi, single)
    chosen = jnp.where(is_point, jnp.argmax(iou[:, :, 1:], axis=-1) + 1, 0)
    prev = jnp.take_along_axis(logits, chosen[:, :, None, None, None], axis=2)[:, :, 0]
    iou0 = mask_iou(prev, gt)
    # The paper's "oracle": the best of the 3 outputs against the GT (a box
    # first prompt has only the single output, already scored in iou0).
    oracle0 = jnp.where(is_point, mask_iou(logits[:, :, 1:], gt[:, :, None]).max(-1), iou0)
    return parts, {"prev": prev, "iou0": iou0, "oracle0": oracle0}

  loss, parts, out = decode_pass(_decoder_prompts(prompts, prompts["coords"],
                                                  prompts["labels"], prompts["pvalid"]),
                                 None, per_mask, (gt, prompts["is_point"]))
  return {"loss": loss, "parts": parts, **out}


def _decoder_prompts(prompts, coords, labels, pvalid):
  """The (coords, labels, pvalid, boxes, box_valid) tuple ``decode_pass`` reads."""
  return coords, labels, pvalid, prompts["boxes"], prompts["box_valid"]


def _followup_passes(decode_pass, prompts, prev, gt, valid, cfg: InteractiveConfig, keys,
                     s: int) -> dict:
  """The corrective-click and mask-only passes, one ``lax.scan`` step each.
  Returns per-pass means [num_followups]: loss, iou and the loss parts."""
  if not cfg.num_followups:
    return {name: jnp.zeros((0,)) for name in
            ("loss", "iou", "mask", "focal", "dice", "iou_mse")}
  r_sched, r_loop = keys
  n, w = 1 + cfg.num_point_iters, _weights(cfg)

  def per_mask(logits, iou, gt):
    parts, _ = sam_loss(logits[:, :, :1], iou[:, :, :1], gt, **w)
    prev = logits[:, :, 0]
    return parts, {"prev": prev, "iou": mask_iou(prev, gt)}

  def body(carry, xs):
    coords, labels, pvalid, cursor, prev = carry
    add, key = xs
    xy, lab, found = prompt_sampling.error_region_point(key, prev, gt, s)
    do = add & found
    slot = jax.nn.one_hot(cursor, n, dtype=bool) & do[..., None]       # [B, K, N]
    coords = jnp.where(slot[..., None], xy[:, :, None, :], coords)
    labels = jnp.where(slot, lab[..., None], labels)
    pvalid = pvalid | slot
    cursor = cursor + do.astype(jnp.int32)
    # The fed-back logits are an input, not a path for gradients.
    loss, parts, per = decode_pass(_decoder_prompts(prompts, coords, labels, pvalid),
                                   jax.lax.stop_gradient(prev), per_mask, gt)
    prev = per["prev"]
    # ``loss`` is the pass's (the one differentiated, also with eager chunk
    # gradients), not a mean of the per-mask ``parts["loss"]``.
    out = {"loss": loss,
           "iou": masked_mean(per["iou"], valid),
           **{name: masked_mean(v, valid) for name, v in parts.items()
              if name not in ("iou", "loss")}}
    return (coords, labels, pvalid, cursor, prev), out

  carry = (prompts["coords"], prompts["labels"], prompts["pvalid"],
           prompts["is_point"].astype(jnp.int32), prev)
  xs = (followup_schedule(r_sched, cfg), jax.random.split(r_loop, cfg.num_followups))
  _, outs = jax.lax.scan(body, carry, xs)
  return outs


def _summarize(first, outs, valid, cfg: InteractiveConfig):
  """(loss, metrics): means over all passes and valid masks."""
  parts0, loss0 = first["parts"], first["loss"]
  passes = 1 + cfg.num_followups
  loss = (loss0 + outs["loss"].sum()) / passes
  iou_per_pass = jnp.concatenate([masked_mean(first["iou0"], valid)[None], outs["iou"]])
  mean_over_passes = {name: (masked_mean(parts0[name], valid) + outs[name].sum()) / passes
                      for name in ("focal", "dice", "iou_mse")}
  metrics = {
      "loss": loss,
      "loss_first": loss0,
      **mean_over_passes,
      "iou_first": iou_per_pass[0],
      "iou_first_oracle": masked_mean(first["oracle0"], valid),
      "iou_last": iou_per_pass[-1],
      "iou_per_pass": iou_per_pass,
      "num_masks": valid.sum().astype(jnp.float32),
  }
  return loss, metrics

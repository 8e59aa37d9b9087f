"""Held-out evaluation during training: one pass, fixed prompts, mask-weighted means.

The metric is the paper's interactive one on the training data's held-out
split: mIoU after the first click (the model's most confident mask and the
oracle best of 3) and after the last corrective click.
"""

from __future__ import annotations

import jax
import numpy as np

from samjax.train.input import eval_iterator

# Eval randomness (the click positions) is fixed, so numbers compare across runs.
EVAL_SEED = 1234


def evaluate(program, params, max_batches: int | None = None
             ) -> tuple[dict[str, float], dict | None]:
  """Mask-weighted mean metrics over the held-out set, and its first batch
  (host numpy, for image summaries). ({}, None) without a held-out set."""
  batches = eval_iterator(program)
  if batches is None:
    return {}, None
  sums, num_masks, first = {}, 0.0, None
  for i, batch in enumerate(batches):
    if max_batches is not None and i >= max_batches:
      break
    if first is None and jax.process_count() == 1:  # fully addressable
      first = jax.tree_util.tree_map(np.asarray, batch)
    m = jax.device_get(program.eval_step(params, batch, jax.random.PRNGKey(EVAL_SEED + i)))
    w = float(m["num_masks"])
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64) * (w if k != "num_masks" else 1)
    num_masks += w
  batches.close()
  if num_masks == 0:
    return {}, first
  means = {k: (v / num_masks if k != "num_masks" else v) for k, v in sums.items()}
  # Scalars as floats; per-pass curves (e.g. iou_per_pass) stay arrays.
  return {k: float(v) if np.ndim(v) == 0 else v for k, v in means.items()}, first


def eval_summary(m: dict) -> str:
  """One line of held-out metrics: 1-click (confident and oracle) and last-click mIoU."""
  return (f"1-click mIoU {m['iou_first']:.4f} (oracle {m['iou_first_oracle']:.4f}), "
          f"last-click mIoU {m['iou_last']:.4f} over {int(m['num_masks'])} masks")


def evaluate_and_log(program, log, step: int, params, when: str) -> dict[str, float]:
  """``evaluate`` + console line + scalars + the GT-vs-prediction image panel."""
  metrics, first = evaluate(program, params, program.config.eval_batches)
  if not metrics:
    return metrics
  log.info(f"[eval] step {step}{when}: {eval_summary(metrics)}")
  log.scalars(step, metrics, "eval")
  if first is not None and log.enabled:
    from samjax.train.summaries import prediction_panel
    try:
      log.image(step, "eval/gt_vs_1click",
                prediction_panel(program.model, jax.device_get(params), first))
    except Exception as e:  # a summary must never stop a run
      print(f"[eval] image summary skipped: {type(e).__name__}: {e}", flush=True)
  return metrics

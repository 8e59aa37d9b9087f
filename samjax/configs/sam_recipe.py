"""The SAM paper's SA-1B training recipe (appendix A) for ViT-B, ViT-L and ViT-H.

Registered as ``sam_vit_{b,l,h}_sa1b``. ``recipe(variant, arg)``: arg "local"
gives a few steps of the same recipe on whatever devices are present (a smoke
test).
"""

from __future__ import annotations

import ml_collections

from samjax.configs.schema import base_config

PAPER = {
    # variant: (total steps, batch, lr, layer decay, drop path, lr drops)
    "vit_b": (180_000, 128, 8e-4, 0.6, 0.6, (120_000, 173_333)),
    "vit_l": (180_000, 128, 4e-4, 0.8, 0.4, (120_000, 173_333)),
    "vit_h": (90_000, 256, 8e-4, 0.8, 0.4, (60_000, 86_666)),
}


def recipe(variant: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper's recipe for ``variant`` (a key of ``PAPER``); ``arg`` "local"
  shrinks it to a 10-step smoke test on the local devices."""
  steps, batch, lr, layer_decay, drop_path, drops = PAPER[variant]
  c = base_config()
  c.model.variant = variant
  c.model.overrides.dtype = "bfloat16"
  c.model.overrides.drop_path_rate = drop_path
  c.model.scan_layers = True
  # The best of `samjax plan --sweep` (ViT-H, v5p-128, meshes (1,-1,1) and
  # (2,-1,1) x block / dots_saveable): saving the weight matmuls' outputs
  # skips their recompute, 2.30 vs 2.42 s/step by the cost model, for 14.4
  # instead of 10.7 GiB per chip.
  c.model.remat_policy = "dots_saveable"
  # Each decoder pass's gradient is taken chunk by chunk in the forward pass
  # (a pass's loss is a sum over masks), so no decoder activations wait for
  # the backward pass: without it (or recomputing every pass) no recipe fits
  # a 95 GiB v5p chip. Against recomputing the passes (`samjax plan`,
  # v5p-128, one image per chip per microbatch): ViT-B 0.513 vs 0.616
  # s/step, ViT-L 0.749 vs 0.847, ViT-H 2.01 vs 2.21, for 2-3 GiB more HBM
  # per chip (v5e-256: ViT-H 14.6 of 16 GiB; 9.5 with --config.prompt_chunk=16).
  c.sim.eager_chunk_grads = True
  # Gradient accumulation, one image per chip per microbatch (the same
  # gradient). ViT-H on v5p-128 (4 images per chip, `samjax plan`, 2-core
  # host, block remat): compile 6.5 min instead of 18, peak HBM 10.7 instead
  # of 24.2 GiB per chip, for a step the TPU cost model puts 6% slower (15%
  # slower measured on one H200 at 8 images). With 1 image per chip it
  # changes nothing. --config.microbatches=1 trades the compile back.
  c.microbatches = 0
  # The paper initialises the encoder from MAE: pass
  # --config.init.checkpoint=mae_pretrain_vit_{b,l,h}.pth (official MAE release).
  # kind="sam" fine-tunes from an official SAM checkpoint; "scratch" needs none.
  c.init.kind = "mae"
  c.data.batch_size = c.data.eval_batch_size = batch
  c.data.worker_count = 8
  c.total_steps = steps
  c.optim.lr = lr
  c.optim.decay_steps = drops
  c.optim.layer_decay = layer_decay
  c.mesh.shape = (1, -1, 1)  # FSDP over all devices
  c.eval_batches = 20
  if arg == "local":
    c.total_steps, c.data.batch_size, c.data.eval_batch_size = 10, 2, 2
    c.data.max_masks, c.data.worker_count = 8, 0
    c.optim.warmup_steps, c.optim.decay_steps = 2, ()
    c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 1, 0, 1, 5
    c.mesh.shape = (-1, 1, 1)
    c.init.kind = "scratch"  # a smoke test needs no MAE file
    # float32 and no remat: the smoke test also runs on CPUs.
    c.model.overrides.dtype, c.model.remat_policy = "float32", "none"
    c.microbatches = 1
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use 'local' or nothing)")
  return c


def vit_b(arg: str | None = None) -> ml_collections.ConfigDict:
  """``sam_vit_b_sa1b``: ViT-B, 180k steps of batch 128."""
  return recipe("vit_b", arg)


def vit_l(arg: str | None = None) -> ml_collections.ConfigDict:
  """``sam_vit_l_sa1b``: ViT-L, 180k steps of batch 128."""
  return recipe("vit_l", arg)


def vit_h(arg: str | None = None) -> ml_collections.ConfigDict:
  """``sam_vit_h_sa1b``: ViT-H, 90k steps of batch 256."""
  return recipe("vit_h", arg)

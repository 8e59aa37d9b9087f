"""The SAM paper's SA-1B training recipe (appendix A), shared by sam_vit_{b,l,h}_sa1b.py.

``recipe(variant, arg)``: arg "local" gives a few steps of the same recipe on
whatever devices are present (a smoke test).
"""

import ml_collections

PAPER = {
    # variant: (total steps, batch, lr, layer decay, drop path, lr drops)
    "vit_b": (180_000, 128, 8e-4, 0.6, 0.6, (120_000, 173_333)),
    "vit_l": (180_000, 128, 4e-4, 0.8, 0.4, (120_000, 173_333)),
    "vit_h": (90_000, 256, 8e-4, 0.8, 0.4, (60_000, 86_666)),
}


def recipe(variant: str, arg=None):
  steps, batch, lr, layer_decay, drop_path, drops = PAPER[variant]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"variant": variant, "overrides": {
      "dtype": "bfloat16", "remat": True, "drop_path_rate": drop_path}})
  # The paper initialises the encoder from MAE: pass
  # --config.init.checkpoint=mae_pretrain_vit_{b,l,h}.pth (official MAE release).
  # kind="sam" fine-tunes from an official SAM checkpoint; "scratch" needs none.
  c.init = ml_collections.ConfigDict({"kind": "mae", "checkpoint": ""})
  c.data = ml_collections.ConfigDict({
      "train_dir": "", "eval_dir": "", "batch_size": batch, "eval_batch_size": batch,
      "max_masks": 64, "worker_count": 8})
  c.sim = ml_collections.ConfigDict({
      "num_point_iters": 8, "num_mask_only_iters": 2, "point_prob": 0.5,
      "box_noise_frac": 0.1, "box_noise_max": 20.0,
      "focal_weight": 20.0, "dice_weight": 1.0, "iou_weight": 1.0})
  c.total_steps = steps
  c.optim = ml_collections.ConfigDict({
      "lr": lr, "warmup_steps": 250, "decay_steps": list(drops), "decay_factor": 0.1,
      "b1": 0.9, "b2": 0.999, "weight_decay": 0.1, "layer_decay": layer_decay,
      "grad_clip": 0.0})
  c.mesh = ml_collections.ConfigDict({"shape": (1, -1, 1)})   # FSDP over all devices
  c.batch_axes = ("data", "fsdp")
  c.prompt_chunk = 0
  c.log_every = 50
  c.eval_every = 5000
  c.eval_batches = 20
  c.eval_at_start = True
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  if arg == "local":
    c.total_steps, c.data.batch_size, c.data.eval_batch_size = 10, 2, 2
    c.data.max_masks, c.data.worker_count = 8, 0
    c.optim.warmup_steps, c.optim.decay_steps = 2, []
    c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 1, 0, 1, 5
    c.mesh.shape = (-1, 1, 1)
    c.init.kind = "scratch"  # a smoke test needs no MAE file
    c.model.overrides = {"dtype": "float32", "remat": False, "drop_path_rate": drop_path}
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use 'local' or nothing)")
  return c

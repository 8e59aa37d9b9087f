"""sam_finetune_coco: fine-tune a trained SAM on your own COCO-format masks.

The most common use of SAM: adapt a trained model to a domain (medical,
remote sensing, documents) from instance masks in COCO format, converted
with ``samjax data convert --coco instances.json --images DIR --out D``.

  samjax train --config sam_finetune_coco --workdir W \\
      --config.init.checkpoint=sam_vit_b_01ec64.pth \\
      --config.data.train_dir=D/train --config.data.eval_dir=D/eval

``:ARG`` picks the model size (``vit_b`` default, ``vit_l``, ``vit_h``,
``vit_tiny`` for the CPU example ``make finetune-demo``); ``:local`` is a
10-step smoke test of the vit_b recipe (as for the paper recipes). Differences from
pretraining (the paper recipe):

- ``init.kind = "sam"``: every weight from ``init.checkpoint`` (an official
  ``.pth``, a converted model folder or a ``samjax train`` workdir);
- the image encoder learns at a tenth of the lr (``optim.image_encoder_lr_scale``;
  0 freezes it: only the prompt encoder and mask decoder train, which is
  also what fits on a small GPU);
- fewer interactive passes: 2 corrective clicks + 1 mask-only pass instead
  of 8 + 2 (a fine-tuning set is small; the decoder passes dominate a step);
- a small lr (1e-4) with a short warmup and one drop at 2/3 of the run;
- held-out evaluation before training (the baseline to beat) and every 500 steps.
"""

from __future__ import annotations

import ml_collections

from samjax.configs.schema import base_config

SIZES = ("vit_b", "vit_l", "vit_h", "vit_tiny", "vit_small")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The fine-tuning recipe for model size ``arg`` (default vit_b; "local":
  a 10-step smoke test of it)."""
  local = arg == "local"
  variant = "vit_b" if local or not arg else arg
  if variant not in SIZES:
    raise ValueError(f"sam_finetune_coco:{variant}: expected one of "
                     f"{', '.join(SIZES)} or local")
  c = base_config()
  c.model.variant = variant
  c.init.kind = "sam"
  c.init.checkpoint = ""  # required: --config.init.checkpoint=PATH
  c.data.batch_size = c.data.eval_batch_size = 8
  c.data.max_masks = 16
  c.sim.num_point_iters, c.sim.num_mask_only_iters = 2, 1
  c.total_steps = 1500
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 50
  c.optim.decay_steps = (1000,)
  c.optim.weight_decay = 0.05
  c.optim.image_encoder_lr_scale = 0.1
  c.log_every = 25
  c.eval_every = 500
  c.eval_at_start = True
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  if local:
    c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 10, 1, 0, 5
    c.data.batch_size = c.data.eval_batch_size = 2
    c.optim.warmup_steps, c.optim.decay_steps = 2, ()
  return c

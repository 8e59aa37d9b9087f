"""Initial parameters: from scratch, from a SAM checkpoint (fine-tuning), or MAE.

``init.kind``:
  scratch  the model's own initialisation;
  sam      every parameter from ``init.checkpoint`` (an official ``.pth``, a
           samjax model dir or a training workdir) of the same architecture;
  mae      the image encoder's patch embedding, blocks and (resized) absolute
           position embedding from an MAE ``.pth`` (``init.checkpoint``); the
           rel-pos tables, neck, prompt encoder and decoder start from scratch.
"""

from __future__ import annotations

import jax
import numpy as np

from samjax.model.block_stacking import convert_block_layout


def make_init_params(init_cfg, model, log=print):
  """Returns ``rng -> params`` for ``init_cfg.kind`` in {scratch, sam, mae}.

  Checkpoints are read (and checked against the model) here, once, so a bad
  path or a mismatched file fails before any compilation.
  """
  kind = init_cfg.kind
  if kind == "scratch":
    return model.init
  if kind in ("sam", "mae") and not init_cfg.checkpoint:
    raise ValueError(f"init.kind={kind!r} needs init.checkpoint=PATH")
  if kind == "sam":
    from samjax.loading import load_config_and_params
    config, params = load_config_and_params(init_cfg.checkpoint)
    if not config.same_architecture(model.config):
      raise ValueError(f"init checkpoint {init_cfg.checkpoint} holds {config.describe()}, "
                       f"the model is {model.config.describe()}")
    # The checkpoint's layout may differ from the model's (a .pth into a
    # scan_layers run): restack the encoder blocks to the model's.
    params = convert_block_layout(params, config, model.config)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    return lambda rng: jax.tree_util.tree_map(jax.numpy.asarray, params)
  if kind == "mae":
    from samjax.interop.mae import apply_mae, encoder_params_from_mae
    from samjax.interop.torch_io import load_state_dict
    encoder, ignored = encoder_params_from_mae(
        load_state_dict(init_cfg.checkpoint), model.config, source=init_cfg.checkpoint)
    n = sum(np.size(x) for x in jax.tree_util.tree_leaves(encoder))
    log(f"[init] MAE encoder weights from {init_cfg.checkpoint}: {n / 1e6:.1f}M values; "
        f"ignored {len(ignored)} MAE-only tensors (cls token, final norm, MAE decoder, ...)")
    return lambda rng: apply_mae(model.init(rng), encoder)
  raise ValueError(f"unknown init.kind {kind!r}; expected scratch, sam or mae")

"""Initial parameters: from scratch or from a SAM checkpoint (fine-tuning).

(Initialisation of the image encoder from MAE weights is not implemented
yet; ``kind='mae'`` raises with that message.)
"""

from __future__ import annotations

import jax
import numpy as np


def make_init_params(init_cfg, model):
  """Returns ``rng -> params`` for ``init_cfg.kind`` in {scratch, sam}."""
  kind = init_cfg.get("kind", "scratch")
  if kind == "scratch":
    return model.init
  if kind == "sam":
    from samjax.interop.infer import describe
    from samjax.loading import load_config_and_params
    config, params = load_config_and_params(init_cfg.checkpoint)
    if not config.same_architecture(model.config):
      raise ValueError(f"init checkpoint {init_cfg.checkpoint} holds {describe(config)}, "
                       f"the model is {describe(model.config)}")
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    return lambda rng: jax.tree_util.tree_map(jax.numpy.asarray, params)
  if kind == "mae":
    raise NotImplementedError("init.kind='mae' (MAE ViT weights) is not implemented yet")
  raise ValueError(f"unknown init.kind {kind!r}; expected scratch, sam or mae")

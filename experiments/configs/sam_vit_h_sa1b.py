"""SAM ViT-H on SA-1B, the paper's recipe (numbers in samjax/configs/sam_recipe.py).

  samjax train --config experiments/configs/sam_vit_h_sa1b.py --workdir W \\
      --config.data.train_dir=/data/sa1b --config.data.eval_dir=/data/sa1b_eval

The same config is registered as ``sam_vit_h_sa1b``; ARG "local" is a smoke test.
"""

from samjax.configs import sam_recipe


def get_config(arg=None):
  return sam_recipe.recipe("vit_h", arg)

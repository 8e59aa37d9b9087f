"""SAM ViT-L on SA-1B, the paper's recipe (numbers in sam_recipe.py).

  samjax train --config experiments/configs/sam_vit_l_sa1b.py --workdir W \\
      --config.data.train_dir=/data/sa1b --config.data.eval_dir=/data/sa1b_eval
"""

from sam_recipe import recipe


def get_config(arg=None):
  return recipe("vit_l", arg)

"""SAM ViT-B on SA-1B, the paper's recipe (appendix A; ViT-B/L use 180k steps).

  samjax data convert --src /data/sa1b_tars --out /data/sa1b --shards 1000 --workers 16
  samjax train --config experiments/configs/sam_vit_b_sa1b.py --workdir gs://.../vit_b \\
      --config.data.train_dir=/data/sa1b --config.data.eval_dir=/data/sa1b_eval

The same config is registered as ``sam_vit_b_sa1b`` (``--config sam_vit_b_sa1b``).
ARG: "local" runs a few steps of the same recipe on the local devices (smoke
test). The numbers live in samjax/configs/sam_recipe.py.
"""

from samjax.configs import sam_recipe


def get_config(arg=None):
  return sam_recipe.recipe("vit_b", arg)

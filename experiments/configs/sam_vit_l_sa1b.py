"""SAM ViT-L on SA-1B, the paper's recipe (see sam_vit_b_sa1b.py for the fields).

  samjax train --config experiments/configs/sam_vit_l_sa1b.py --workdir W \\
      --config.data.train_dir=/data/sa1b --config.data.eval_dir=/data/sa1b_eval
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "sam_vit_b_sa1b", os.path.join(os.path.dirname(__file__), "sam_vit_b_sa1b.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg=None):
  return _base.recipe("vit_l", arg)

"""sam_finetune_coco: fine-tune a trained SAM on COCO-format masks.

Run:
  samjax data convert --coco train.json --images IMAGES --out D/train --shards 4
  samjax data convert --coco val.json --images IMAGES --out D/eval --shards 1
  samjax train --config experiments/configs/sam_finetune_coco.py:vit_b --workdir W \\
      --config.init.checkpoint=sam_vit_b_01ec64.pth \\
      --config.data.train_dir=D/train --config.data.eval_dir=D/eval

Registered as ``sam_finetune_coco``; the settings and why are in
samjax/configs/sam_finetune_coco.py.
"""

from samjax.configs import sam_finetune_coco


def get_config(arg=None):
  return sam_finetune_coco.get_config(arg)

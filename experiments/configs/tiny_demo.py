"""tiny_demo: vit_tiny (256 px) learns the built-in sample data on a CPU in minutes.

Run (what `make demo` does, after making and converting the sample data):
  samjax train --config experiments/configs/tiny_demo.py --workdir demo_out/train \\
      --config.data.train_dir=demo_out/data/train --config.data.eval_dir=demo_out/data/eval

The same config is registered as ``tiny_demo`` (``--config tiny_demo``); its
settings and measured results are in samjax/configs/tiny_demo.py.
"""

from samjax.configs import tiny_demo


def get_config(arg=None):
  return tiny_demo.get_config(arg)

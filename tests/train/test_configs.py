"""Experiment configs load, carry the paper's recipe, and take CLI overrides."""

import pytest

from samjax.commands.train import load_config


@pytest.mark.parametrize("variant, steps, batch, lr", [("b", 180_000, 128, 8e-4),
                                                        ("l", 180_000, 128, 4e-4),
                                                        ("h", 90_000, 256, 8e-4)])
def test_paper_recipes(variant, steps, batch, lr):
  c = load_config(f"experiments/configs/sam_vit_{variant}_sa1b.py")
  assert (c.total_steps, c.data.batch_size, c.optim.lr) == (steps, batch, lr)
  assert c.sim.num_point_iters == 8 and c.sim.num_mask_only_iters == 2
  assert c.sim.focal_weight == 20.0 and c.optim.weight_decay == 0.1
  assert c.optim.warmup_steps == 250 and c.data.max_masks == 64
  local = load_config(f"experiments/configs/sam_vit_{variant}_sa1b.py:local")
  assert local.total_steps == 10


def test_overrides_are_typed_and_checked():
  c = load_config("experiments/configs/tiny_demo.py",
                  ["--config.total_steps=7", "--config.optim.lr=1", "--config.data.train_dir=/x"])
  assert c.total_steps == 7 and c.optim.lr == 1.0 and c.data.train_dir == "/x"
  with pytest.raises(ValueError, match="no field"):
    load_config("experiments/configs/tiny_demo.py", ["--config.optim.nope=1"])
  with pytest.raises(ValueError, match="=value"):
    load_config("experiments/configs/tiny_demo.py", ["--config.total_steps"])
  with pytest.raises(FileNotFoundError):
    load_config("experiments/configs/absent.py")

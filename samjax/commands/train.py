"""``samjax train``: promptable-segmentation pretraining from an experiment config."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys

HELP = """\
Train SAM on SA-1B-format TFRecords (from `samjax data convert`).

  samjax train --config experiments/configs/sam_vit_b_sa1b.py --workdir W \\
      --config.data.train_dir=/data/sa1b_tfrecords --config.total_steps=1000

--config names a Python file with get_config(arg) (ml_collections); append
:ARG to pass an argument. Any field can be overridden with
--config.a.b=value (Python literal or string). The run resumes automatically
from the latest checkpoint in W (state, optimizer, RNG, data-iterator
position). W receives config.json (resolved config, seed, code version),
metrics.jsonl, tensorboard/ and checkpoints/. SIGTERM saves and exits. For
several processes set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID (or run under a cluster jax detects).
"""


def register(subparsers):
  p = subparsers.add_parser("train", help="train / fine-tune SAM from a config",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="config file[:arg]")
  p.add_argument("--workdir", required=True, help="run directory (created; resumed)")
  p.set_defaults(func=run, accepts_overrides=True)


def load_config(spec: str, overrides=()):
  """``path.py[:arg]`` + ['--config.a.b=v', ...] -> ml_collections ConfigDict."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such config file: {path}")
  mod_spec = importlib.util.spec_from_file_location("samjax_experiment_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  # As when running a script: modules beside the config (shared recipes) import.
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  try:
    mod_spec.loader.exec_module(module)
  finally:
    sys.path.pop(0)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} has no get_config(arg)")
  config = module.get_config(arg or None)
  for item in overrides:
    if not item.startswith("--config."):
      raise ValueError(f"unknown argument {item!r} (overrides look like --config.a.b=value)")
    key, sep, text = item[len("--config."):].partition("=")
    if not sep:
      raise ValueError(f"override {item!r} needs '=value'")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
      if name not in node:
        raise ValueError(f"override {item!r}: config has no field {name!r}")
      node = node[name]
    if leaf not in node:
      raise ValueError(f"override {item!r}: config has no field {key!r}")
    if isinstance(node[leaf], float) and isinstance(value, int):
      value = float(value)
    node[leaf] = value
  return config


def run(args) -> int:
  from samjax.train.loop import train_and_evaluate
  config = load_config(args.config, getattr(args, "overrides", ()))
  results = train_and_evaluate(config, args.workdir)
  if "iou_first" in results:
    print(f"final held-out 1-click mIoU {results['iou_first']:.4f}, last-click mIoU "
          f"{results['iou_last']:.4f}")
  return 0

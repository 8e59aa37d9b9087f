"""``samjax train``: promptable-segmentation pretraining from an experiment config."""

from __future__ import annotations

import argparse

from samjax.configs import NAMES

HELP = f"""\
Train SAM on SA-1B-format TFRecords (from `samjax data convert`).

  samjax train --config sam_vit_b_sa1b --workdir W \\
      --config.data.train_dir=/data/sa1b_tfrecords --config.total_steps=1000
  samjax train --config experiments/configs/tiny_demo.py --workdir W

--config is a registered name ({", ".join(NAMES)})
or a Python file with get_config(arg) returning an ml_collections
ConfigDict; append :ARG to pass an argument (sam_vit_b_sa1b:local is a 10-step
smoke test). Every field is declared, with its default and meaning, in
samjax/configs/schema.py.

Overrides --config.a.b=value follow ml_collections config_flags: the value is
parsed by the field's type (bool: true/false, or a bare --config.a.b for true;
int; float, an int is accepted; str; tuple: --config.optim.decay_steps='(100,200)'
or '[100,200]', or the flag repeated once per element; a dict such as
model.overrides: a literal that replaces it whole, e.g.
--config.model.overrides="{{'image_size': 512}}"). A field whose default
is None has a declared type and takes a value of it (it cannot be set back to
None from the command line). The config is locked: a field it lacks is an
error, as is a value of the wrong type.

The run resumes automatically from the latest checkpoint in W (state,
optimizer, RNG, data-iterator position). W receives config.json (resolved
config, seed, code version), metrics.jsonl, tensorboard/ and checkpoints/.
W may be local or gs://bucket/run (metrics.jsonl is then metrics/*.jsonl
segment objects); s3:// is refused, as orbax cannot checkpoint there yet.
SIGTERM saves and exits. For several processes set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID (or run under a cluster jax detects).
"""


def register(subparsers):
  p = subparsers.add_parser("train", help="train / fine-tune SAM from a config",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, metavar="NAME_OR_FILE[:ARG]",
                 help="a registered config name or a config .py file, optionally "
                      "with :ARG; then --config.a.b=value overrides")
  p.add_argument("--workdir", required=True,
                 help="run directory, local or gs:// (created; resumed)")
  p.set_defaults(func=run, accepts_overrides=True, extra="train")


def load_config(spec: str, overrides=()):
  """``samjax.configs.load_config`` (kept importable from here)."""
  from samjax.configs import load_config as load
  return load(spec, overrides)


def run(args) -> int:
  # The config and the workdir's store first: a bad override or an s3://
  # workdir fails in a line, before the training code loads.
  config = load_config(args.config, getattr(args, "overrides", ()))
  from data_pipelines import storage
  storage.check_checkpoint_location(args.workdir)
  from samjax.train.loop import train_and_evaluate
  results = train_and_evaluate(config, args.workdir)
  if "iou_first" in results:
    print(f"final held-out 1-click mIoU {results['iou_first']:.4f}, last-click mIoU "
          f"{results['iou_last']:.4f}")
  return 0

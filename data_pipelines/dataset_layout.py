"""On-disk layout of a converted dataset: what the writer and the readers agree on.

``sa1b_to_tfrecord`` writes it; ``grain_source``, ``verify`` and the tests
read it. Output directory of ``samjax data convert`` (N shards)::

  plan.json                          which inputs go to which shard (resume check)
  sa1b-00000-of-0000N.tfrecord       framed Examples (see tfrecord.py, example_codec.py)
  sa1b-00000-of-0000N.tfrecord.idx   "offset size" per record (``tfrecord.index_path``)
  sa1b-00000-of-0000N.done.json      per-shard stats; its presence marks the shard finished
  manifest.json                      totals, per-shard sha256, feature spec, skipped inputs

The manifest's ``format`` is ``FORMAT``; ``VERSION`` is the newest layout
this code writes (older versions read the same).
"""

from __future__ import annotations

import json
import os

FORMAT = "samjax-sa1b-tfrecord"
VERSION = 2  # 2: optional train/* copies (version 1 directories read the same)

MANIFEST = "manifest.json"
PLAN = "plan.json"
SHARD_PREFIX = "sa1b-"  # every per-shard file name starts with it


def shard_name(i: int, n: int) -> str:
  """File name of shard ``i`` of ``n``."""
  return f"{SHARD_PREFIX}{i:05d}-of-{n:05d}.tfrecord"


def done_name(shard: str) -> str:
  """Name of the stats file that marks shard file ``shard`` finished."""
  return shard.replace(".tfrecord", ".done.json")


def load_manifest(out_dir: str) -> dict:
  """Reads ``out_dir/manifest.json``; names the directory if it is missing."""
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{out_dir} has no {MANIFEST}: not a finished `samjax data convert` output")
  with open(path) as f:
    m = json.load(f)
  if m.get("format") != FORMAT:
    raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
  return m

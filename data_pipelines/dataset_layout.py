"""On-disk layout of a converted dataset: what the writer and the readers agree on.

``sa1b_to_tfrecord`` writes it; ``grain_source``, ``verify`` and the tests
read it. Output directory of ``samjax data convert`` (N shards)::

  plan.json                          which inputs go to which shard (resume check)
  sa1b-00000-of-0000N.tfrecord       framed Examples (see tfrecord.py, example_codec.py)
  sa1b-00000-of-0000N.tfrecord.idx   "offset size" per record (``tfrecord.index_path``)
  sa1b-00000-of-0000N.done.json      per-shard stats, written last: the shard is finished when
                                     its files match the sizes and sha256s recorded here
  manifest.json                      totals, per-shard sha256, feature spec, skipped inputs

The manifest's ``format`` is ``FORMAT``; ``VERSION`` is the newest layout
this code writes (older versions read the same). ``is_output_file`` and
``is_temp_file`` recognise exactly these names (and the temp files a killed
write leaves behind), so the converter never deletes a file it did not write.
"""

from __future__ import annotations

import json
import re

from data_pipelines import atomic_io, storage

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


_SHARD_FILE = re.compile(
    re.escape(SHARD_PREFIX) + r"\d{5,}-of-\d{5,}\.(tfrecord|tfrecord\.idx|done\.json)")
# ``atomic_io``'s temp names, and ``<shard>.tmp-<pid>[.idx]`` of older converters.
_TEMP_FILE = re.compile(r"(?P<target>.+)" + re.escape(atomic_io.TEMP_MARKER)
                        + r"[0-9A-Za-z]+(\.idx)?")


def is_output_file(name: str) -> bool:
  """Whether file name ``name`` is one the converter writes (any shard count)."""
  return name in (MANIFEST, PLAN) or _SHARD_FILE.fullmatch(name) is not None


def is_temp_file(name: str, targets=None) -> bool:
  """Whether ``name`` is a temp file left by an interrupted write of an output
  file (of one of ``targets`` when given)."""
  m = _TEMP_FILE.fullmatch(name)
  if m is None or not is_output_file(m["target"]):
    return False
  return targets is None or m["target"] in targets


def load_manifest(out_dir: str) -> dict:
  """Reads ``out_dir/manifest.json`` (local or on a bucket); names the
  directory if it is missing and the file if it is unreadable."""
  path = storage.join(out_dir, MANIFEST)
  try:
    data = storage.read_bytes(path)
  except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
    raise FileNotFoundError(
        f"{out_dir} has no {MANIFEST}: not a finished `samjax data convert` output") from None
  try:
    m = json.loads(data)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); rerun `samjax data convert`") from e
  if not isinstance(m, dict) or m.get("format") != FORMAT:
    got = m.get("format") if isinstance(m, dict) else type(m).__name__
    raise ValueError(f"{path}: format {got!r}, expected {FORMAT!r}")
  return m

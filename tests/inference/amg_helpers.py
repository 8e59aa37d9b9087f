"""What the `samjax amg` fault and multi-process tests share: four small
photos, the flags that keep a run to a fraction of a second, a runner that
kills itself mid-write, and a byte-for-byte folder comparison."""

from __future__ import annotations

import os
import pathlib

import skimage.data
from PIL import Image

# Random tiny weights: low thresholds and no NMS so that masks survive; a 2x2
# grid on 48x64 images keeps every run to a fraction of a second after compiling.
SETTINGS = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh",
            "0", "--box-nms-thresh", "1.0", "--no-progress"]
STEMS = ("sa_1", "sa_2", "sa_3", "sa_4")


def write_small_images(folder) -> None:
  """``<stem>.jpg`` for STEMS: four skimage photos at 64x48."""
  photos = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut(),
            skimage.data.rocket()]
  for stem, photo in zip(STEMS, photos):
    small = Image.fromarray(photo).resize((64, 48), Image.BILINEAR)
    small.save(os.path.join(folder, f"{stem}.jpg"), quality=90)


def files(d) -> dict[str, bytes]:
  """{path relative to ``d``: bytes} of every file under ``d``."""
  return {os.path.relpath(os.path.join(root, n), d): pathlib.Path(root, n).read_bytes()
          for root, _, names in os.walk(d) for n in names}


def assert_equal_folders(out, ref) -> None:
  """Same files, subfolders included (no temp files, nothing extra), and
  the same bytes."""
  got, want = files(out), files(ref)
  assert sorted(got) == sorted(want)
  for n in want:
    assert got[n] == want[n], n


# `python -c KILLING_RUNNER SUFFIX N samjax-args...`: a `samjax amg` that
# SIGKILLs itself halfway through the Nth atomic write of a file ending in
# SUFFIX: no finally blocks, no cleanup, as the OOM killer does.
KILLING_RUNNER = """
import contextlib, os, signal, sys
from data_pipelines import atomic_io
suffix, nth = sys.argv[1], int(sys.argv[2])
real, seen = atomic_io.atomic_writer, [0]

class HalfThenDie:
  def __init__(self, f):
    self.f = f
  def write(self, data):
    self.f.write(data[:max(1, len(data) // 2)])
    self.f.flush()
    os.fsync(self.f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
  def __getattr__(self, name):
    return getattr(self.f, name)

@contextlib.contextmanager
def killing_writer(path, mode="wb", encoding=None):
  with real(path, mode, encoding) as f:
    if str(path).endswith(suffix):
      seen[0] += 1
      if seen[0] == nth:
        f = HalfThenDie(f)
    yield f

atomic_io.atomic_writer = killing_writer
from samjax.cli import main
sys.exit(main(sys.argv[3:]))
"""

"""Which inputs each process takes when a command runs on N processes.

``samjax amg`` and ``samjax eval`` launched on every host of a pod split
their images with one rule: the input at position ``i`` of the list every
process builds the same way (``amg``: files as given, folders sorted;
``eval``: the dataset's image ids) belongs to process ``i % N``.

Round robin rather than contiguous blocks, because of resuming: a run
finishes each process's images in list order, so what a killed run has done
is (roughly) a prefix of every process's share, which under round robin is
a prefix of the whole list. A restart on any N, the same or another, then
deals that prefix evenly again, and every process gets about the same
number of images left. With blocks, the done images would sit at the start
of each old block and a restart on another N would leave some processes
nothing and others whole blocks. Round robin also spreads runs of
similar, neighbouring files (one camera, one size) over all processes.

Nothing here depends on what is already done: ownership is a function of
the position alone, so processes that look at the outputs at different
moments still agree on who does what, and no two processes ever write the
same image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def owner(position: int, count: int) -> int:
  """The process (0 .. count-1) that handles the input at ``position``."""
  if count < 1:
    raise ValueError(f"process count must be >= 1, got {count}")
  return position % count


def share(items: Sequence[T], index: int, count: int) -> list[T]:
  """Process ``index``'s items of ``items``, in their order."""
  if not 0 <= index < count:
    raise ValueError(f"process index {index} is not in 0..{count - 1}")
  return [x for i, x in enumerate(items) if owner(i, count) == index]

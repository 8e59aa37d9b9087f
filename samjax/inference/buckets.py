"""Padding of variable prompt counts to a few fixed sizes (buckets).

Inside jit every shape is static, so 1, 2, 3 ... clicks would each compile a
new program. Point counts and prompt counts are rounded up to the next bucket
and the padding carries ``valid = False`` (ignored exactly by the model), so
interactive use compiles once per bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

POINT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PROMPT_BUCKETS = (1, 4, 16, 64, 256)


def bucket(n: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= n; beyond the largest, the next multiple of it."""
  for b in buckets:
    if n <= b:
      return b
  top = buckets[-1]
  return -(-n // top) * top

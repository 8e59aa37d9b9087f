"""The TPU compiler's out-of-HBM error, read back into numbers.

XLA:TPU refuses a program that does not fit in HBM; ``samjax plan`` turns
that refusal into a report (fits: NO, by how much) instead of an error.
"""

from __future__ import annotations

import re

# The two forms of XLA:TPU's out-of-HBM compile error seen with libtpu 0.0.42:
#   "Ran out of memory on HBM, the total memory required for HLO temporaries
#    (291.73G) exceeds available HBM (95.74G)."
#   "Ran out of memory in memory space hbm. Used 120.5G of 95.74G hbm.
#    Exceeded hbm capacity by 24.8G."
_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"
_OOM_TEMP_RE = re.compile(rf"HLO temporaries \({_SIZE}\) exceeds available HBM \({_SIZE}\)")
_OOM_USED_RE = re.compile(rf"Used {_SIZE} of {_SIZE} hbm")
_UNIT = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_hbm_oom(message: str):
  """XLA:TPU out-of-HBM compile error -> (kind, bytes, capacity bytes), or None.

  kind is "temp" (the HLO temporaries alone need ``bytes``) or "total" (the
  whole program needs ``bytes``).
  """
  for kind, regex in (("temp", _OOM_TEMP_RE), ("total", _OOM_USED_RE)):
    m = regex.search(message)
    if m:
      need = float(m.group(1)) * _UNIT[m.group(2)]
      cap = float(m.group(3)) * _UNIT[m.group(4)]
      return kind, int(need), int(cap)
  return None

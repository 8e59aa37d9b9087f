"""What a compiled multi-slice TPU program sends over the data-center network.

The TPU compiler splits a multi-slice program in two: collectives inside a
slice stay XLA collectives over ICI (their replica groups never leave the
slice), and whatever must cross slices becomes explicit host transfers to
the "megascale" runtime: ``send`` / ``recv`` pairs with frontend attributes
``_xla_host_transfer_handler_name="xla_megascale_runtime"`` and
``_xla_megascale_transfer_type`` (``ALL_REDUCE``, ``ALL_GATHER``,
``REDUCE_SCATTER``, ...). Reading the ``send`` ops of ``compiled.as_text()``
therefore lists the DCN traffic exactly: its kind, the payload each device
sends, and how many times per step (a send inside a ``while`` body, e.g. a
scan over layers or microbatches, runs once per trip). The TPU compiler
writes no trip count on its loops and peels their first iteration, so a
loop's trips are read from its condition (``counter < N``) and the
counter's initial value in the loop's operand tuple (0, or 1 once peeled).
"""

from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8,
                "u64": 8, "c64": 8, "c128": 16}
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_CALLEES = re.compile(r"(?:body|calls|to_apply|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%([\w.\-]+) = ")
_CONSTANT = re.compile(r" constant\((-?\d+)\)")
_OPERANDS = re.compile(r" (?:while|tuple|copy|bitcast|compare)\(([^)]*)\)")
_ARRAY = re.compile(r"([a-z0-9]+)\[([\d,]*)\]")


@dataclasses.dataclass
class DcnTransfer:
  """One kind of cross-slice transfer in a step, per device.

  Attributes:
    kind: the megascale transfer type ("ALL_REDUCE", ...).
    count: sends per step (loop trips counted).
    bytes: payload bytes per device per step, summed over those sends.
    largest: the largest single payload, e.g. "f32[64,8,128]".
  """
  kind: str
  count: int = 0
  bytes: int = 0
  largest: str = ""
  largest_bytes: int = 0


def _array_bytes(text: str) -> tuple[int, str]:
  """Bytes and spelling of the first array in an HLO shape like
  ``(f32[64,8,128]{2,1,0:T(8,128)}, u32[], token[])``."""
  m = _ARRAY.search(text)
  if m is None or m.group(1) not in _DTYPE_BYTES:
    return 0, ""
  dims = [int(d) for d in m.group(2).split(",") if d]
  return math.prod(dims) * _DTYPE_BYTES[m.group(1)], m.group(0)


def _computations(hlo_text: str) -> dict[str, list[str]]:
  """{computation name: its instruction lines}; the entry is under "ENTRY"."""
  out, name = {}, None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      name = "ENTRY" if line.startswith("ENTRY") else m.group(1)
      out[name] = []
    elif name is not None and line.startswith("  "):
      out[name].append(line)
  return out


def _by_name(lines: list[str]) -> dict[str, str]:
  out = {}
  for line in lines:
    m = _INSTRUCTION.match(line)
    if m:
      out[m.group(1)] = line
  return out


def _operands(line: str) -> list[str]:
  m = _OPERANDS.search(line)
  return [o.strip().lstrip("%") for o in m.group(1).split(",")] if m else []


def _constant_of(name: str, defs: dict[str, str]) -> int | None:
  """The integer constant ``name`` holds, through copies and bitcasts."""
  for _ in range(8):
    line = defs.get(name)
    if line is None:
      return None
    m = _CONSTANT.search(line)
    if m:
      return int(m.group(1))
    ops = _operands(line)
    if not ops or not re.search(r" (?:copy|bitcast)\(", line):
      return None
    name = ops[0]
  return None


def _loop_trips(line: str, caller: dict[str, str], comps: dict[str, list[str]]) -> int:
  """Trips of the ``while`` on ``line``: its known trip count, else ``N - init``
  for a condition ``counter < N`` and the counter's initial constant."""
  m = _TRIP_COUNT.search(line)
  if m:
    return int(m.group(1))
  cond = re.search(r"condition=%([\w.\-]+)", line)
  cond_defs = _by_name(comps.get(cond.group(1), [])) if cond else {}
  root = next((x for x in cond_defs.values() if x.lstrip().startswith("ROOT")), "")
  if "direction=LT" not in root:
    return 1
  bounds = [_constant_of(o, cond_defs) for o in _operands(root)]
  if bounds[-1:] == [None] or not bounds:
    return 1
  init = 0
  ops = _operands(line)
  if ops and ops[0] in caller:
    first = _operands(caller[ops[0]])[:1]
    init = (_constant_of(first[0], caller) if first else None) or 0
  return max(bounds[-1] - init, 1)


def _multipliers(comps: dict[str, list[str]]) -> dict[str, int]:
  """How many times per step each computation runs: 1 for the entry, times
  the trips of each enclosing while loop (1 where they cannot be read)."""
  mult = {"ENTRY": 1}
  todo = ["ENTRY"]
  while todo:
    name = todo.pop()
    defs = _by_name(comps.get(name, ()))
    for line in comps.get(name, ()):
      trips = _loop_trips(line, defs, comps) if " while(" in line else 1
      callees = _CALLEES.findall(line)
      for branches in _BRANCHES.findall(line):
        callees += [b.strip().lstrip("%") for b in branches.split(",")]
      for callee in callees:
        times = mult[name] * (trips if f"body=%{callee}" in line else 1)
        if times > mult.get(callee, 0):
          mult[callee] = times
          todo.append(callee)
  return mult


def dcn_transfers(hlo_text: str) -> list[DcnTransfer]:
  """The cross-slice transfers of a compiled program (``compiled.as_text()``),
  one entry per transfer kind, largest traffic first; [] for a one-slice
  program."""
  comps = _computations(hlo_text)
  mult = _multipliers(comps)
  by_kind: dict[str, DcnTransfer] = {}
  for name, lines in comps.items():
    for line in lines:
      if " send(" not in line or "xla_megascale_runtime" not in line:
        continue
      kind = re.search(r'_xla_megascale_transfer_type="(\w+)"', line)
      t = by_kind.setdefault(kind.group(1) if kind else "UNKNOWN",
                             DcnTransfer(kind.group(1) if kind else "UNKNOWN"))
      nbytes, spelled = _array_bytes(line.split("=", 1)[1])
      times = mult.get(name, 1)
      t.count += times
      t.bytes += nbytes * times
      if nbytes > t.largest_bytes:
        t.largest, t.largest_bytes = spelled, nbytes
  return sorted(by_kind.values(), key=lambda t: -t.bytes)

"""One table of accelerator kinds, and topology names -> (kind, chip count).

Numbers are per *chip* (what a datasheet quotes) and dense (no structured
sparsity). HBM is the nominal capacity; the runtime keeps a little of it for
itself, so a plan that fits with under ~2% headroom is optimistic.

Topology names (``parse_topology``) come in two forms:

* ``KIND:AxBxC`` (``v5p:4x4x4``, ``v5e:16x16``): the chip grid, the form
  libtpu's ``get_topology_desc`` takes. Chips = product of the dimensions.
* ``KIND-N`` (``v5p-128``, ``v5e-256``, ``v6e-256``): the Cloud TPU
  accelerator-type name. For v4 and v5p, N counts *TensorCores* (2 per chip):
  v5p-128 is 64 chips (topology 4x4x4); for v5e (``v5litepod-N``) and v6e, N
  counts chips (1 TensorCore each): v5e-256 is 256 chips (16x16). The grid
  for a ``KIND-N`` name is the standard slice shape of that many chips
  (``STANDARD_SHAPES``), as in the Cloud TPU docs' topology tables.
"""

from __future__ import annotations

import dataclasses
import math
import re

GiB = 2 ** 30
TERA = 1e12


@dataclasses.dataclass(frozen=True)
class ChipKind:
  """One accelerator chip.

  Attributes:
    name: short name ("v5p", "h100").
    platform: "tpu" or "gpu".
    hbm_bytes: HBM per chip, bytes.
    peak_bf16_flops: dense bf16 matmul peak per chip, FLOP/s.
    cores_per_chip: TensorCores per chip (TPU; 1 for GPUs). libtpu presents
      a v5p chip as one device (megacore) but a v4 chip as two.
    device_kind: ``jax.Device.device_kind`` libtpu reports for it.
    source: where the numbers come from.
  """
  name: str
  platform: str
  hbm_bytes: int
  peak_bf16_flops: float
  cores_per_chip: int = 1
  device_kind: str = ""
  source: str = ""


CHIPS: dict[str, ChipKind] = {c.name: c for c in (
    # cloud.google.com/tpu/docs/v4: "275 TFLOPs" peak bf16, "32 GiB" HBM2,
    # 2 TensorCores per chip.
    ChipKind("v4", "tpu", 32 * GiB, 275 * TERA, 2, "TPU v4",
             "cloud.google.com/tpu/docs/v4"),
    # cloud.google.com/tpu/docs/v5e: "Peak compute per chip (bf16) 197 TFLOPs",
    # "HBM2 capacity 16 GB", one TensorCore per chip.
    ChipKind("v5e", "tpu", 16 * GiB, 197 * TERA, 1, "TPU v5 lite",
             "cloud.google.com/tpu/docs/v5e"),
    # cloud.google.com/tpu/docs/v5p: "Peak compute per chip (bf16) 459
    # TFLOPs", "HBM2e capacity 95GB", 2 TensorCores per chip (one megacore
    # device).
    ChipKind("v5p", "tpu", 95 * GiB, 459 * TERA, 2, "TPU v5",
             "cloud.google.com/tpu/docs/v5p"),
    # cloud.google.com/tpu/docs/v6e (Trillium): "Peak compute per chip (bf16)
    # 918 TFLOPs", "HBM capacity per chip 32 GB", one TensorCore per chip.
    ChipKind("v6e", "tpu", 32 * GiB, 918 * TERA, 1, "TPU v6 lite",
             "cloud.google.com/tpu/docs/v6e"),
    # NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with
    # sparsity); 40GB HBM2 / 80GB HBM2e.
    ChipKind("a100-40gb", "gpu", 40 * GiB, 312 * TERA, 1, "NVIDIA A100-SXM4-40GB",
             "NVIDIA A100 Tensor Core GPU datasheet"),
    ChipKind("a100-80gb", "gpu", 80 * GiB, 312 * TERA, 1, "NVIDIA A100-SXM4-80GB",
             "NVIDIA A100 Tensor Core GPU datasheet"),
    # NVIDIA H100 datasheet (SXM): BF16 Tensor Core 1,979 TFLOPS *with
    # sparsity*, i.e. 989 dense; 80GB HBM3.
    ChipKind("h100", "gpu", 80 * GiB, 989 * TERA, 1, "NVIDIA H100 80GB HBM3",
             "NVIDIA H100 Tensor Core GPU datasheet (SXM)"),
    # NVIDIA H200 datasheet (SXM): BF16 1,979 TFLOPS with sparsity (989
    # dense, the H100's compute); 141GB HBM3e (about 140 GiB addressable).
    ChipKind("h200", "gpu", 140 * GiB, 989 * TERA, 1, "NVIDIA H200",
             "NVIDIA H200 Tensor Core GPU datasheet (SXM)"),
)}

# Aliases accepted for kinds (Cloud TPU's own names included).
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "trillium": "v6e", "a100": "a100-80gb",
           "a100-40g": "a100-40gb", "a100-80g": "a100-80gb", "h100-80gb": "h100",
           "h200-141gb": "h200"}

# Standard slice shapes by chip count, for ``KIND-N`` names (the Cloud TPU
# docs' topology tables; 3D for v4/v5p, 2D for v5e/v6e).
STANDARD_SHAPES = {
    "3d": {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
           128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16),
           2048: (8, 16, 16), 4096: (16, 16, 16), 6144: (16, 16, 24)},
    "2d": {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
           128: (8, 16), 256: (16, 16)},
}


def chip_kind(name: str) -> ChipKind:
  """The ``ChipKind`` of a kind name (case-insensitive; aliases allowed)."""
  key = name.strip().lower()
  key = ALIASES.get(key, key)
  if key not in CHIPS:
    raise ValueError(f"unknown accelerator kind {name!r}; known: {', '.join(CHIPS)}")
  return CHIPS[key]


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice: its kind, chip grid and the libtpu topology name."""
  chip: ChipKind
  shape: tuple[int, ...]

  @property
  def num_chips(self) -> int:
    return math.prod(self.shape)

  @property
  def libtpu_name(self) -> str:
    """``get_topology_desc`` name, e.g. "v5p:4x4x4"."""
    return f"{self.chip.name}:{'x'.join(map(str, self.shape))}"

  @property
  def cloud_name(self) -> str:
    """Cloud TPU accelerator type, e.g. "v5p-128" (TensorCores for v4/v5p)."""
    return f"{self.chip.name}-{self.num_chips * self.chip.cores_per_chip}"

  def __str__(self) -> str:
    return f"{self.libtpu_name} ({self.cloud_name}, {self.num_chips} chips)"


def parse_topology(name: str) -> Topology:
  """"v5p:4x4x4", "v5p-128", "v5e:16x16", "v6e-256" -> ``Topology``.

  Raises ValueError (one line) for names it cannot read.
  """
  text = name.strip().lower()
  m = re.fullmatch(r"([a-z0-9]+)[:=_]((?:\d+x)*\d+)", text)
  if m:
    chip = _tpu_kind(m.group(1), name)
    shape = tuple(int(d) for d in m.group(2).split("x"))
    want = 3 if chip.name in ("v4", "v5p") else 2
    if len(shape) != want or min(shape) < 1:
      raise ValueError(f"topology {name!r}: {chip.name} grids have {want} dimensions "
                       f"(e.g. {chip.name}:{'x'.join(['2'] * want)})")
    return Topology(chip, shape)
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  if m:
    chip = _tpu_kind(m.group(1), name)
    n = int(m.group(2))
    if n % chip.cores_per_chip:
      raise ValueError(f"topology {name!r}: {chip.name}-N counts TensorCores "
                       f"({chip.cores_per_chip} per chip); N must be even")
    chips = n // chip.cores_per_chip
    shapes = STANDARD_SHAPES["3d" if chip.name in ("v4", "v5p") else "2d"]
    if chips not in shapes:
      raise ValueError(f"topology {name!r}: no standard {chip.name} slice of {chips} "
                       f"chips; give the grid instead (e.g. {chip.name}:2x2x1)")
    return Topology(chip, shapes[chips])
  raise ValueError(f"cannot read topology {name!r}; use KIND:AxBxC (v5p:4x4x4, "
                   "v5e:16x16) or a Cloud TPU type (v5p-128, v6e-256)")


def _tpu_kind(kind: str, name: str) -> ChipKind:
  try:
    chip = chip_kind(kind)
  except ValueError:
    chip = None
  if chip is None or chip.platform != "tpu":
    tpus = [c.name for c in CHIPS.values() if c.platform == "tpu"]
    raise ValueError(f"topology {name!r}: unknown TPU kind {kind!r} "
                     f"(known: {', '.join(tpus)})")
  return chip


def chips_per_device(chip: ChipKind, device) -> float:
  """Chips one jax device stands for: 1 for megacore / single-core chips,
  1/2 for a v4 TensorCore libtpu presents as its own device."""
  cores = int(getattr(device, "num_cores", 0) or chip.cores_per_chip)
  return cores / chip.cores_per_chip

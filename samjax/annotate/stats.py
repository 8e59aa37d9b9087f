"""The data engine's own measures of an annotation folder: seconds per mask,
clicks per mask and masks per image, per round and annotator (the numbers
the SAM paper compares its rounds by)."""

from __future__ import annotations

import dataclasses

from data_pipelines import storage
from samjax.inference.sa1b_records import record_problem


@dataclasses.dataclass
class Group:
  round: str
  annotator: str
  first: str = ""  # earliest accepted_at: rounds are listed in time order
  masks: int = 0
  auto: int = 0       # accepted as pre-filled, untouched
  edited: int = 0     # pre-filled, then edited
  seconds: float = 0.0
  clicks: int = 0
  worked: int = 0     # masks that took the annotator's time (not untouched auto)
  images: set = dataclasses.field(default_factory=set)

  def row(self) -> dict:
    per = lambda x: x / self.worked if self.worked else 0.0
    return {"round": self.round, "annotator": self.annotator, "masks": self.masks,
            "images": len(self.images),
            "masks_per_image": self.masks / len(self.images) if self.images else 0.0,
            "seconds_per_mask": per(self.seconds), "clicks_per_mask": per(self.clicks),
            "auto_accepted": self.auto, "auto_edited": self.edited}


def collect(out_dir: str) -> tuple[list[dict], list[str]]:
  """(rows in round order, problems) over the SA-1B JSONs of ``out_dir``."""
  if not storage.isdir(out_dir):
    raise FileNotFoundError(f"{out_dir} is not a directory")
  groups: dict[tuple[str, str], Group] = {}
  problems = []
  for name in sorted(storage.listdir(out_dir)):
    if not name.endswith(".json"):
      continue
    path = storage.join(out_dir, name)
    doc, problem = record_problem(path)
    if doc is None:
      problems.append(f"{name}: {problem}")
      continue
    file_name = doc["image"]["file_name"]
    for a in doc["annotations"]:
      key = (str(a.get("round", "")), str(a.get("annotator", "")))
      g = groups.setdefault(key, Group(*key, first=str(a.get("accepted_at", ""))))
      g.first = min(g.first, str(a.get("accepted_at", "")))
      g.masks += 1
      g.images.add(file_name)
      source = a.get("source", "auto")
      g.auto += source == "auto"
      g.edited += source == "auto-edited"
      if source != "auto":
        g.worked += 1
        g.seconds += float(a.get("seconds", 0.0))
        g.clicks += len(a.get("clicks") or [])
  ordered = sorted(groups.values(), key=lambda g: (g.first, g.round, g.annotator))
  return [g.row() for g in ordered], problems


def format_table(rows: list[dict]) -> str:
  head = ("round", "annotator", "masks", "images", "masks/image", "s/mask", "clicks/mask",
          "auto", "auto-edited")
  lines = [head]
  for r in rows:
    lines.append((r["round"], r["annotator"], str(r["masks"]), str(r["images"]),
                  f"{r['masks_per_image']:.1f}", f"{r['seconds_per_mask']:.1f}",
                  f"{r['clicks_per_mask']:.1f}", str(r["auto_accepted"]),
                  str(r["auto_edited"])))
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                   for line in lines)

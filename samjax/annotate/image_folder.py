"""The images an annotation session serves: a flat folder, addressed by file
name only, so no request can reach a file outside it."""

from __future__ import annotations

import dataclasses

from data_pipelines import storage
from samjax.inference.sa1b_records import IMAGE_EXTS


@dataclasses.dataclass(frozen=True)
class Skipped:
  name: str
  reason: str


class ImageFolder:
  """The image files directly inside ``root`` (sorted by name).

  Other files are listed in ``skipped`` with the reason; so are images whose
  stems collide (``a.jpg`` and ``a.png`` would both write ``a.json``).
  """

  def __init__(self, root: str):
    if not storage.isdir(root):
      raise FileNotFoundError(f"--images {root} is not a directory")
    self.root = storage.resolve(root)
    self.names: list[str] = []
    self.skipped: list[Skipped] = []
    stems: dict[str, str] = {}
    for name in sorted(storage.listdir(self.root)):
      path = storage.join(self.root, name)
      stem, ext = storage.splitext(name)
      if not storage.isfile(path):
        continue
      if ext.lower() not in IMAGE_EXTS:
        self.skipped.append(Skipped(name, "not an image file (by its extension)"))
      elif stem in stems:
        self.skipped.append(Skipped(name, f"same stem as {stems[stem]} (one JSON per stem)"))
      else:
        stems[stem] = name
        self.names.append(name)
    if not self.names:
      raise FileNotFoundError(f"--images {root} holds no image files "
                              f"({', '.join(IMAGE_EXTS)})")

  def path(self, name: str) -> str:
    """The file of image ``name``; a name that is not one of ``names`` (a
    path, ``..``, a skipped file) is a ``KeyError`` with a one-line reason."""
    if not isinstance(name, str) or name not in self.names:
      raise KeyError(f"no image named {name!r} in the image folder")
    return storage.join(self.root, name)

  def index(self, name: str) -> int:
    self.path(name)
    return self.names.index(name)


def stem(name: str) -> str:
  return storage.splitext(name)[0]

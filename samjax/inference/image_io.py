"""Image files -> the HxWx3 uint8 RGB arrays the predictor and generator take.

Shared by ``samjax segment`` and ``samjax amg``, so both read a file the same
way (EXIF orientation, colour conversion) and report unreadable files alike.
"""

from __future__ import annotations

import os

import numpy as np


def read_image(path: str) -> np.ndarray:
  """Any PIL-readable file -> HxWx3 uint8 RGB (EXIF orientation applied).

  Raises:
    FileNotFoundError: ``path`` is not a file.
    ValueError: PIL cannot read it (not an image, truncated, ...).
  """
  from PIL import Image, ImageOps, UnidentifiedImageError
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such image: {path}")
  try:
    with Image.open(path) as im:
      im = ImageOps.exif_transpose(im)
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from e


"""Image files -> the HxWx3 uint8 RGB arrays the predictor and generator take.

THE image reader of every samjax command (``segment``, ``amg``): one place
decides how a file becomes pixels, so a photo gives the same masks whichever
command reads it, and every unreadable file is reported the same way.

What it does with each kind of file (PIL modes):

- EXIF orientation is applied (``ImageOps.exif_transpose``): pixels come
  back upright, as image viewers show them; masks are in that frame.
- Every PIL mode becomes RGB by ``data_pipelines.pixels.to_rgb`` (also the
  COCO converter's): grayscale, palette, CMYK, ... converted by PIL, 16-bit
  grayscale scaled to 8 bits, transparency composited over white; a mode
  with no one right 8-bit mapping (``F``, ``HSV``, ...) is refused by name.
- Animated files (GIF, multi-page TIFF): the first frame.
- Images larger than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``
  times two) are refused with a message saying so, not decoded.

Every failure is a ``ValueError`` whose message starts ``cannot read image
<path>:`` and says why, so folder runs can skip the file with that reason.

Paths may be local, ``gs://`` or ``s3://`` (``data_pipelines.storage``); a
remote image is fetched whole (one request) before it is decoded.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from data_pipelines import storage
from data_pipelines.pixels import to_rgb

_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class DecodedImage:
  """An image file's pixels as the commands use them, plus what the file held.

  Attributes:
    rgb: HxWx3 uint8 RGB, upright (EXIF orientation applied).
    format: PIL's name of the file format ("JPEG", "PNG", ...).
    mode: the file's PIL mode before conversion ("RGB", "I;16", ...).
    orientation: the EXIF orientation tag (1 = upright; None if absent).
  """
  rgb: np.ndarray
  format: str | None
  mode: str
  orientation: int | None

  @property
  def rotated(self) -> bool:
    """True when the stored pixels are not upright (``rgb`` differs from a
    plain decode of the file in orientation, maybe in size)."""
    return self.orientation not in (None, 1)


def read_image(path: str) -> np.ndarray:
  """Any supported image file -> HxWx3 uint8 RGB (see the module docstring).

  Raises:
    FileNotFoundError: ``path`` is not a file.
    ValueError: the file cannot be read or converted; the message names the
      file and the reason.
  """
  return decode_image_file(path).rgb


def image_source(path: str):
  """What ``PIL.Image.open`` takes for ``path``: the local path itself (PIL
  reads it lazily), or a remote file's bytes in memory (PIL seeks around a
  file; on a bucket each seek would be a request)."""
  if storage.is_remote(path):
    return io.BytesIO(storage.read_bytes(path))
  return path


def decode_image_file(path: str) -> DecodedImage:
  """``read_image`` plus the file's format, mode and EXIF orientation."""
  from PIL import Image, ImageOps
  if not storage.isfile(path):
    raise FileNotFoundError(f"no such image: {path}")
  try:
    with Image.open(image_source(path)) as im:
      fmt, mode = im.format, im.mode
      orientation = im.getexif().get(_EXIF_ORIENTATION)
      im.load()
      upright = ImageOps.exif_transpose(im)
      if upright is im:  # must outlive the ``with`` that closes ``im``
        upright = im.copy()
  except Image.DecompressionBombError as e:
    # PIL's guard against files that decode to absurd sizes; decoding such a
    # file would exhaust memory, so it is refused like any unreadable file.
    raise ValueError(f"cannot read image {path}: too large to decode ({e} The limit "
                     "is PIL.Image.MAX_IMAGE_PIXELS.)") from e
  except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ...
    raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
  try:
    rgb = to_rgb(upright)
  except ValueError as e:
    raise ValueError(f"cannot read image {path}: {e}") from e
  if orientation is not None:
    try:
      orientation = int(orientation)
    except (TypeError, ValueError):
      orientation = None
  return DecodedImage(rgb, fmt, mode, orientation)

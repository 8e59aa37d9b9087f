"""Image files -> the HxWx3 uint8 RGB arrays the predictor and generator take.

THE image reader of every samjax command (``segment``, ``amg``): one place
decides how a file becomes pixels, so a photo gives the same masks whichever
command reads it, and every unreadable file is reported the same way.

What it does with each kind of file (PIL modes):

- EXIF orientation is applied (``ImageOps.exif_transpose``): pixels come
  back upright, as image viewers show them; masks are in that frame.
- RGB is returned as is; grayscale (``L``, bilevel ``1``), palette (``P``),
  CMYK, YCbCr and RGBX are converted to RGB by PIL.
- 16-bit grayscale (``I;16*``, e.g. 16-bit PNGs) is scaled to 8 bits,
  ``round(v * 255 / 65535)``. 32-bit integer images (``I``) are read the same
  way when every value fits in 0..65535 (how 16-bit data usually arrives in
  that mode) and refused otherwise. (PIL itself clips these to 255: a
  white image and wrong masks without any error.)
- Transparency (``RGBA``, ``LA``, ``PA``, or a palette/grayscale
  transparent colour) is composited over white (``ALPHA_BACKGROUND``), the
  way a viewer on a white page shows the image; the colour values under
  fully transparent pixels are never seen.
- Anything else (32-bit float ``F``, ``LAB``, ``HSV``, ...) is refused with
  a message naming the mode: there is no one right mapping to 8-bit RGB.
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

# RGB value transparent pixels are composited over (white, as on a white page).
ALPHA_BACKGROUND = 255

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_PIL_TO_RGB = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
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


def to_rgb(im) -> np.ndarray:
  """A loaded PIL image -> HxWx3 uint8 RGB, by the rules of the module docstring.

  Raises:
    ValueError: a mode with no defined conversion (the message names it).
  """
  mode = im.mode
  if mode in _SIXTEEN_BIT or mode == "I":
    gray = np.asarray(im)
    if mode == "I" and gray.size and (gray.min() < 0 or gray.max() > 65535):
      raise ValueError(f"32-bit integer pixels (mode I) with values {int(gray.min())}.."
                       f"{int(gray.max())}, outside 0..65535: no defined 8-bit mapping; "
                       "convert the image to 8- or 16-bit first")
    # Round to nearest: 65535 -> 255, 0 -> 0, 257 * k -> k exactly.
    gray8 = ((gray.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray8[..., None], 3, axis=2))
  if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
    rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
    a = rgba[..., 3:]
    out = (rgba[..., :3] * a + ALPHA_BACKGROUND * (255 - a) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))
  if mode in _PIL_TO_RGB:
    rgb = im if mode == "RGB" else im.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, np.uint8))
  raise ValueError(f"unsupported pixel mode {mode!r} (supported: 8-bit RGB, grayscale, "
                   "palette, CMYK, YCbCr, 16-bit grayscale, with or without alpha); "
                   "convert it to 8-bit RGB first")

"""A decoded PIL image -> HxWx3 uint8 RGB: the one pixel conversion of samjax.

Shared by the commands' image reader (``samjax.inference.image_io``) and the
COCO converter (``data_pipelines.coco``), so a file becomes the same pixels
whether it is segmented or converted to training records. It lives here,
below both, because ``data_pipelines`` never imports ``samjax``'s packages
(the import-graph test forbids a cycle between them). Needs only numpy: the
caller has opened the image with PIL.

Rules, by PIL mode:

- RGB is returned as is; grayscale (``L``, bilevel ``1``), palette (``P``),
  CMYK, YCbCr and RGBX are converted to RGB by PIL.
- 16-bit grayscale (``I;16*``, e.g. 16-bit PNGs) is scaled to 8 bits,
  ``round(v * 255 / 65535)``. 32-bit integer images (``I``) are read the same
  way when every value fits in 0..65535 (how 16-bit data usually arrives in
  that mode) and refused otherwise. (PIL itself clips these to 255: a white
  image without any error.)
- Transparency (``RGBA``, ``LA``, ``PA``, or a palette/grayscale transparent
  colour) is composited over white (``ALPHA_BACKGROUND``), the way a viewer
  on a white page shows the image; the colour values under fully transparent
  pixels are never seen.
- Anything else (32-bit float ``F``, ``LAB``, ``HSV``, ...) is refused with a
  message naming the mode: there is no one right mapping to 8-bit RGB.
"""

from __future__ import annotations

import numpy as np

# RGB value transparent pixels are composited over (white, as on a white page).
ALPHA_BACKGROUND = 255

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_PIL_TO_RGB = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im) -> np.ndarray:
  """A loaded PIL image -> (h, w, 3) uint8 RGB, by the rules of the module docstring.

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

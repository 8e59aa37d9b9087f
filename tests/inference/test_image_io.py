"""THE image reader: every PIL mode a command may meet, as the pixels it returns.

Each case writes a small synthetic file in one mode (PIL writes them all) and
asserts the exact RGB values `read_image` gives, so a mode that PIL would
convert wrongly (16-bit clipped to white) or not at all fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_pipelines import pixels
from data_pipelines.pixels import ALPHA_BACKGROUND
from samjax.inference.image_io import decode_image_file, read_image


def _save(tmp_path, im: Image.Image, name: str, **kwargs) -> str:
  path = str(tmp_path / name)
  im.save(path, **kwargs)
  return path


def _gray(values) -> np.ndarray:
  """The RGB image whose three channels all equal ``values`` (uint8)."""
  v = np.asarray(values, np.uint8)
  return np.repeat(v[..., None], 3, axis=-1)


def test_rgb_is_returned_unchanged(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  got = read_image(_save(tmp_path, Image.fromarray(rgb), "a.png"))
  assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
  np.testing.assert_array_equal(got, rgb)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, ext):
  values = np.array([[0, 257, 32768, 65535, 1000]], np.uint16)
  path = _save(tmp_path, Image.fromarray(values), f"a.{ext}")
  assert Image.open(path).mode.startswith("I;16")
  got = read_image(path)
  # round(v * 255 / 65535); PIL's own convert("RGB") would give 255 for all but 0.
  np.testing.assert_array_equal(got, _gray([[0, 1, 128, 255, 4]]))


def test_32_bit_integer_mode_in_16_bit_range_is_scaled(tmp_path):
  values = np.array([[0, 65535, 25700]], np.int32)
  path = _save(tmp_path, Image.fromarray(values, "I"), "a.tif")
  assert Image.open(path).mode == "I"
  np.testing.assert_array_equal(read_image(path), _gray([[0, 255, 100]]))


def test_32_bit_integer_mode_out_of_range_is_refused(tmp_path):
  path = _save(tmp_path, Image.fromarray(np.array([[0, 70000]], np.int32), "I"), "a.tif")
  with pytest.raises(ValueError, match=r"cannot read image .*a\.tif: .*outside 0\.\.65535"):
    read_image(path)


def test_grayscale_and_bilevel_become_rgb(tmp_path):
  gray = np.array([[0, 17, 200, 255]], np.uint8)
  np.testing.assert_array_equal(read_image(_save(tmp_path, Image.fromarray(gray), "l.png")),
                                _gray(gray))
  bits = Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1")
  np.testing.assert_array_equal(read_image(_save(tmp_path, bits, "b.png")),
                                _gray([[0, 255, 0]]))


def test_palette_becomes_its_colours(tmp_path):
  pal = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
  pal.putpalette([255, 0, 0, 0, 0, 255, 10, 20, 30])
  got = read_image(_save(tmp_path, pal, "p.png"))
  np.testing.assert_array_equal(got, [[[255, 0, 0], [0, 0, 255], [10, 20, 30]]])
  # A palette with a transparent entry: that entry is composited over white.
  got = read_image(_save(tmp_path, pal, "pt.png", transparency=0))
  np.testing.assert_array_equal(got, [[[255, 255, 255], [0, 0, 255], [10, 20, 30]]])


def test_alpha_is_composited_over_white(tmp_path):
  rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [10, 20, 30, 128],
                    [200, 100, 0, 51]]], np.uint8)
  got = read_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
  assert ALPHA_BACKGROUND == 255
  a = rgba[..., 3:].astype(np.float64) / 255
  want = np.round(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[0, :2], [[255, 255, 255], [10, 20, 30]])
  la = np.array([[[0, 0], [100, 255], [100, 128]]], np.uint8)
  got = read_image(_save(tmp_path, Image.fromarray(la, "LA"), "la.png"))
  np.testing.assert_array_equal(got, _gray([[255, 100, 177]]))


def test_cmyk_is_converted(tmp_path):
  cmyk = Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # no cyan, full magenta + yellow
  got = read_image(_save(tmp_path, cmyk, "c.tif"))
  np.testing.assert_array_equal(got, [[[255, 0, 0], [255, 0, 0]]])


def test_exif_orientation_is_applied(tmp_path):
  stored = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)   # 4 rows, 6 columns
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 CW to view"
  path = _save(tmp_path, Image.fromarray(stored), "r.png", exif=exif)
  decoded = decode_image_file(path)
  assert decoded.orientation == 6 and decoded.rotated and decoded.format == "PNG"
  np.testing.assert_array_equal(decoded.rgb, np.rot90(stored, k=-1))
  plain = decode_image_file(_save(tmp_path, Image.fromarray(stored), "p.png"))
  assert plain.orientation is None and not plain.rotated


@pytest.mark.parametrize("mode, dtype", [("F", np.float32)])
def test_other_modes_are_refused_by_name(tmp_path, mode, dtype):
  path = _save(tmp_path, Image.fromarray(np.zeros((2, 2), dtype), mode), "f.tif")
  with pytest.raises(ValueError, match=rf"cannot read image .*f\.tif: unsupported pixel "
                                       rf"mode '{mode}'"):
    read_image(path)


def test_unsupported_mode_of_an_in_memory_image_is_named():
  with pytest.raises(ValueError, match="unsupported pixel mode 'HSV'"):
    pixels.to_rgb(Image.new("HSV", (2, 2)))


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
  path = _save(tmp_path, Image.new("RGB", (40, 30)), "big.png")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused above 2x: 1200 > 200
  with pytest.raises(ValueError, match=r"cannot read image .*big\.png: too large to "
                                       r"decode .*MAX_IMAGE_PIXELS"):
    read_image(path)


@pytest.mark.parametrize("content, reason", [
    (b"not an image", "UnidentifiedImageError"),
    (None, "truncated"),
])
def test_unreadable_files_name_the_file_and_reason(tmp_path, content, reason):
  path = tmp_path / "bad.jpg"
  if content is None:  # the first half of a real JPEG
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                    ).save(full, quality=95)
    content = full.read_bytes()[:full.stat().st_size // 2]
  path.write_bytes(content)
  with pytest.raises(ValueError, match=rf"cannot read image .*bad\.jpg: .*{reason}"):
    read_image(str(path))
  with pytest.raises(FileNotFoundError, match="no such image"):
    read_image(str(tmp_path / "missing.png"))

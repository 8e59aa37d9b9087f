"""BSDS500 ground truth: several annotators' boundary maps per image.

Two layouts are read, matched to the images by file stem:

* BSDS500 ``.mat`` files (``BSR/BSDS500/data/groundTruth/test/<id>.mat``):
  a variable ``groundTruth``, a 1xK cell array of structs, one per
  annotator, each with ``Segmentation`` (HxW region labels) and
  ``Boundaries`` (HxW logical). Only ``Boundaries`` is used, as the
  benchmark does. MATLAB v5 files (the ones BSDS500 ships); v7.3 (HDF5)
  files are refused with a message.
* Plain PNG edge maps, one per annotator: ``<id>.png`` (a single annotator)
  or ``<id>_<k>.png`` (k = 0, 1, ...; any integers). Nonzero pixels are
  boundary pixels: give binary maps (an averaged / soft map would count
  every nonzero pixel as a boundary).

Folders and files may be local, ``gs://`` or ``s3://``
(``data_pipelines.storage``; scipy's ``loadmat`` reads a remote ``.mat``
from its bytes in memory).

``write_bsds_mat`` writes the ``.mat`` layout (for the sample maker and
tests); ``loadmat`` reads it back exactly like the released files.
"""

from __future__ import annotations

import io
import re

import numpy as np

from data_pipelines import storage

MAT_EXT = ".mat"
PNG_EXT = ".png"
# "<id>_<k>": annotator k of image <id>.
_ANNOTATOR = re.compile(r"^(.+)_(\d+)$")


def read_bsds_mat(path: str) -> list[np.ndarray]:
  """One [H, W] bool boundary map per annotator from a BSDS500 ``.mat``."""
  from scipy.io import loadmat
  if not storage.isfile(path):
    raise FileNotFoundError(f"ground truth {path}: no such file")
  try:
    data = loadmat(io.BytesIO(storage.read_bytes(path)) if storage.is_remote(path) else path)
  except NotImplementedError as e:  # scipy's answer to v7.3 (HDF5) files
    raise ValueError(f"ground truth {path}: MATLAB v7.3 files are not supported; "
                     "save it with -v7 (the BSDS500 release is v5)") from e
  except Exception as e:  # scipy raises many types on garbage (IndexError, ...)
    raise ValueError(f"ground truth {path}: not a readable .mat file "
                     f"({type(e).__name__}: {e})") from e
  if "groundTruth" not in data:
    found = sorted(k for k in data if not k.startswith("__"))
    raise ValueError(f"ground truth {path}: no 'groundTruth' variable (has {found}); "
                     "expected the BSDS500 layout")
  cells = np.asarray(data["groundTruth"]).ravel()
  out = []
  for k, cell in enumerate(cells):
    try:
      struct = np.asarray(cell).ravel()[0]
      boundaries = np.asarray(struct["Boundaries"])
      while boundaries.dtype == object:  # struct fields come wrapped in 1x1 cells
        boundaries = np.asarray(boundaries.ravel()[0])
    except (IndexError, KeyError, ValueError, TypeError) as e:
      raise ValueError(f"ground truth {path}: annotator {k} has no 'Boundaries' "
                       f"field ({e})") from e
    if boundaries.ndim != 2:
      raise ValueError(f"ground truth {path}: annotator {k}'s Boundaries has shape "
                       f"{boundaries.shape}, expected HxW")
    out.append(boundaries != 0)
  if not out:
    raise ValueError(f"ground truth {path}: 'groundTruth' holds no annotator")
  _check_same_shape(out, path)
  return out


def read_png_edges(paths: list[str]) -> list[np.ndarray]:
  """One [H, W] bool boundary map per PNG (nonzero = boundary; colour images
  count a pixel if any colour channel is nonzero, alpha is ignored)."""
  from PIL import Image, UnidentifiedImageError

  from samjax.inference.image_io import image_source
  out = []
  for path in paths:
    try:
      with Image.open(image_source(path)) as im:
        a = np.asarray(im)
    except FileNotFoundError:
      raise FileNotFoundError(f"ground truth {path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
      raise ValueError(f"ground truth {path}: not a readable image ({e})") from e
    if a.ndim == 3:
      a = a[..., :3].max(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if a.ndim != 2:
      raise ValueError(f"ground truth {path}: unexpected image shape {a.shape}")
    out.append(a != 0)
  if not out:
    raise ValueError("no PNG ground truth given")
  _check_same_shape(out, ", ".join(paths))
  return out


def _check_same_shape(maps: list[np.ndarray], where: str) -> None:
  shapes = {m.shape for m in maps}
  if len(shapes) > 1:
    raise ValueError(f"ground truth {where}: annotators' maps differ in size {sorted(shapes)}")


def ground_truth_files(gt_dir: str, image_ids: list[str]) -> dict[str, list[str]]:
  """{image id: its ground-truth files} for every id, from a folder of
  ``.mat`` and/or PNG files (extensions in any case; other files ignored).

  An id's files are ``<id>.mat``, or ``<id>.png`` and/or ``<id>_<k>.png``
  (sorted by k; a ``<id>_<k>.png`` that is itself an image id belongs to
  that image). An id with both a ``.mat`` and PNGs is refused (which one is
  meant is unclear), as is an id with none.
  """
  if not storage.isdir(gt_dir):
    raise FileNotFoundError(f"--gt {gt_dir}: no such folder")
  ids = set(image_ids)
  mats: dict[str, str] = {}
  pngs: dict[str, list[tuple[int, str]]] = {}
  for name in storage.listdir(gt_dir):
    path = storage.join(gt_dir, name)
    stem, ext = storage.splitext(name)
    if ext.lower() not in (MAT_EXT, PNG_EXT) or not storage.isfile(path):
      continue
    if ext.lower() == MAT_EXT:
      mats[stem] = path
      continue
    m = _ANNOTATOR.match(stem)
    if stem in ids or m is None or m.group(1) not in ids:
      pngs.setdefault(stem, []).append((-1, path))
    else:
      pngs.setdefault(m.group(1), []).append((int(m.group(2)), path))
  out, missing, both = {}, [], []
  for image_id in image_ids:
    if image_id in mats and image_id in pngs:
      both.append(image_id)
    elif image_id in mats:
      out[image_id] = [mats[image_id]]
    elif image_id in pngs:
      out[image_id] = [p for _, p in sorted(pngs[image_id])]
    else:
      missing.append(image_id)
  if both:
    raise ValueError(f"--gt {gt_dir}: both .mat and PNG ground truth for {len(both)} "
                     f"image(s), e.g. {both[:5]}; keep one format per image")
  if missing:
    raise FileNotFoundError(
        f"--gt {gt_dir}: no ground truth (<id>.mat, <id>.png or <id>_<k>.png) for "
        f"{len(missing)} of {len(image_ids)} image(s), e.g. {missing[:5]}")
  return out


def read_ground_truth(paths: list[str]) -> list[np.ndarray]:
  """The boundary maps of one image from its ``index_ground_truth`` entry."""
  if len(paths) == 1 and paths[0].lower().endswith(MAT_EXT):
    return read_bsds_mat(paths[0])
  return read_png_edges(paths)


def write_bsds_mat(path: str, boundaries: list[np.ndarray],
                   segmentations: list[np.ndarray] | None = None) -> None:
  """Writes K annotators' maps in the BSDS500 ``.mat`` layout (1xK cell of
  structs with ``Segmentation`` uint16 and ``Boundaries`` logical)."""
  from scipy.io import savemat

  from data_pipelines import atomic_io
  if segmentations is None:
    segmentations = [np.ones(b.shape, np.uint16) for b in boundaries]
  cells = np.empty((1, len(boundaries)), dtype=object)
  for k, (b, s) in enumerate(zip(boundaries, segmentations, strict=True)):
    cells[0, k] = {"Segmentation": np.asarray(s, np.uint16),
                   "Boundaries": np.asarray(b, bool)}
  with atomic_io.atomic_writer(path) as f:
    savemat(f, {"groundTruth": cells}, do_compression=True)

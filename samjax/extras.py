"""Optional dependencies: which extra provides what, and the one-line error
when one is missing.

``pip install samjax`` is the inference install (``load_sam``, the predictor,
the automatic mask generator, ``samjax.segment_anything``, ``samjax
segment/amg/convert``). The rest is in extras, declared in ``setup.cfg``:

  train   ``samjax train``, training workdirs, model directories (orbax)
  data    ``samjax data``, the grain input pipeline
  eval    ``samjax eval``
  plan    ``samjax plan`` (the train step's packages + libtpu)
  cloud   ``gs://`` / ``s3://`` paths
  torch   official ``.pth`` files, bfloat16 ``.safetensors``

A feature whose extra is missing fails at once with one line naming it, e.g.
``samjax train needs grain, optax (not installed): pip install 'samjax[train]'``:
``require`` where one package is imported, ``require_extra`` where a command
starts (it only looks the packages up, importing none).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# extra -> the modules samjax imports from it (the first name of each module
# is what `find_spec` looks up). Same packages as setup.cfg's extras_require.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("optax", "orbax.checkpoint", "grain", "tensorflow_datasets", "google_crc32c",
              "ml_collections", "tensorboardX"),
    "data": ("grain", "tensorflow_datasets", "google_crc32c", "skimage"),
    "eval": ("skimage",),
    "plan": ("optax", "orbax.checkpoint", "grain", "tensorflow_datasets", "google_crc32c",
             "ml_collections", "tensorboardX", "libtpu"),
    "cloud": ("gcsfs", "s3fs"),
    "torch": ("torch",),
}

# module -> pip distribution, where the names differ.
PACKAGES = {
    "orbax.checkpoint": "orbax-checkpoint",
    "tensorflow_datasets": "tensorflow-datasets",
    "google_crc32c": "google-crc32c",
    "skimage": "scikit-image",
}


class MissingExtraError(ImportError):
  """An optional package is not installed; the message names the extra."""


def package_name(module: str) -> str:
  """The pip name of the distribution that provides ``module``."""
  return PACKAGES.get(module, module.split(".")[0])


def install_hint(extra: str) -> str:
  return f"pip install 'samjax[{extra}]'"


def message(what: str, extra: str, modules) -> str:
  names = ", ".join(sorted({package_name(m) for m in modules}))
  return f"{what} needs {names} (not installed): {install_hint(extra)}"


def installed(module: str) -> bool:
  """Whether ``module`` can be imported, without importing it (a dotted name
  imports its parent packages)."""
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def missing(extra: str) -> list[str]:
  """The modules of ``extra`` that are not installed."""
  return [m for m in EXTRAS[extra] if not installed(m)]


def require_extra(extra: str, what: str) -> None:
  """Raises ``MissingExtraError`` naming ``extra`` unless all its packages are
  installed (looked up, not imported: costs milliseconds).

  Args:
    extra: a key of ``EXTRAS``.
    what: the feature, for the message ("samjax train").
  """
  absent = missing(extra)
  if absent:
    raise MissingExtraError(message(what, extra, absent))


def require(module: str, extra: str, what: str) -> ModuleType:
  """``import module``, or ``MissingExtraError`` naming ``extra`` when it (or a
  package it is part of) is not installed. An import error inside an installed
  package is not hidden: it propagates as it is."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
      raise
    raise MissingExtraError(message(what, extra, [module])) from None

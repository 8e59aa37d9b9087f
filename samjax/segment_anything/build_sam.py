"""``sam_model_registry`` and ``build_sam*``: the official builders' names and
signatures, returning samjax models.

``checkpoint`` is an official ``.pth`` (or anything ``samjax.load_sam``
reads: a converted model directory, a training workdir), local or in a
bucket (``gs://...``, ``s3://...`` for files: ``data_pipelines.storage``);
``None`` gives random weights, as the official builders do.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax

from samjax.loading import LoadedSam, load_sam
from samjax.model.configs import OFFICIAL_VARIANTS, VARIANTS
from samjax.model.sam import build
from samjax.segment_anything.modeling.sam import Sam


def _build(variant: str, checkpoint=None) -> Sam:
  if checkpoint is None:
    model = build(variant)
    return Sam(LoadedSam(model, model.init(jax.random.PRNGKey(0))))
  return Sam(load_sam(os.fspath(checkpoint), variant))


def build_sam_vit_h(checkpoint=None) -> Sam:
  return _build("vit_h", checkpoint)


build_sam = build_sam_vit_h


def build_sam_vit_l(checkpoint=None) -> Sam:
  return _build("vit_l", checkpoint)


def build_sam_vit_b(checkpoint=None) -> Sam:
  return _build("vit_b", checkpoint)


def _builder(variant: str) -> Callable[..., Sam]:
  def builder(checkpoint=None) -> Sam:
    return _build(variant, checkpoint)
  builder.__name__ = f"build_sam_{variant}"
  builder.__doc__ = f"samjax's {variant} ({VARIANTS[variant].describe()})."
  return builder


sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam,
    "vit_h": build_sam,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    # samjax's own sizes (small models for tests and CPU demos).
    **{v: _builder(v) for v in VARIANTS if v not in OFFICIAL_VARIANTS},
}

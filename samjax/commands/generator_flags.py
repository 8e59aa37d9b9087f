"""The automatic mask generator's settings as command-line flags: one table
for every verb that runs the generator (``samjax amg``, ``samjax eval
proposals``), official names and defaults."""

from __future__ import annotations

import argparse

# (flag, type, default, help): the official SamAutomaticMaskGenerator's
# constructor arguments, same names (dashes for underscores), same defaults.
SETTINGS = (
    ("points-per-side", int, 32, "grid of points-per-side^2 point prompts"),
    ("pred-iou-thresh", float, 0.88, "drop masks whose predicted IoU is below this"),
    ("stability-score-thresh", float, 0.95, "drop masks whose stability score is below this"),
    ("stability-score-offset", float, 1.0, "logit offset of the stability score"),
    ("box-nms-thresh", float, 0.7, "box IoU above which a duplicate mask is dropped"),
    ("crop-n-layers", int, 0, "if > 0, also run on crops, this many layers of them"),
    ("crop-nms-thresh", float, 0.7, "box IoU above which duplicates across crops are dropped"),
    ("crop-overlap-ratio", float, 512 / 1500,
     "overlap of neighbouring crops (fraction of the image side)"),
    ("crop-n-points-downscale-factor", int, 1,
     "points-per-side is divided by this in each crop layer"),
    ("min-mask-region-area", int, 0,
     "remove holes and islands smaller than this (pixels); 0: off"),
)

# The settings that change which masks come out (results record them);
# points_per_batch only changes speed.
GENERATOR_ARGS = tuple(flag.replace("-", "_") for flag, *_ in SETTINGS)


def add_generator_flags(parser: argparse.ArgumentParser, points_per_batch: int = 64):
  """Adds the group "generator settings" to ``parser``; returns it.

  ``points_per_batch``: the default of ``--points-per-batch`` (official: 64).
  """
  # Every default in --help, whichever formatter the verb's parser has.
  shows = issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
  suffix = "" if shows else " (default: %(default)s)"
  g = parser.add_argument_group("generator settings (official names and defaults)")
  for flag, kind, default, help_text in SETTINGS:
    g.add_argument(f"--{flag}", type=kind, default=default, help=help_text + suffix)
    if flag == "points-per-side":
      g.add_argument("--points-per-batch", type=int, default=points_per_batch,
                     help="points decoded per jitted call (any positive number)" + suffix)
  return g


def generator_kwargs(args) -> dict:
  """The parsed settings as ``SamAutomaticMaskGenerator`` keyword arguments
  (without ``points_per_batch``)."""
  return {k: getattr(args, k) for k in GENERATOR_ARGS}

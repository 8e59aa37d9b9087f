"""``samjax <verb>``: the command-line entry point.

Verbs live in ``samjax/commands/`` (and ``data_pipelines/cli.py`` for
``samjax data``); each registers its own sub-parser and help text.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) of each verb's ``register`` function, in --help order.
_VERBS = (
    ("samjax.commands.convert_weights", "register"),
    ("samjax.commands.segment", "register"),
    ("samjax.commands.amg", "register"),
    ("samjax.commands.train", "register"),
    ("data_pipelines.cli", "register"),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="samjax",
      description="Segment Anything in JAX: convert weights, segment, label "
                  "images, build datasets and train.")
  sub = parser.add_subparsers(dest="verb", metavar="VERB")
  sub.required = True
  for module, attr in _VERBS:
    try:
      mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
      if not module.startswith(str(e.name)):  # a real import error inside the verb
        raise
      continue
    getattr(mod, attr)(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra:
    if not getattr(args, "accepts_overrides", False):
      parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
  try:
    return int(args.func(args) or 0)
  except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    print(f"samjax {args.verb}: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())

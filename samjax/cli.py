"""``samjax <verb>``: the command-line entry point.

Verbs live in ``samjax/commands/`` (and ``data_pipelines/cli.py`` for
``samjax data``); each registers its own sub-parser and help text.

Errors are for people: whatever a verb raises ends as a message,
``samjax VERB: error: ...``, and exit status 1 (130 for Ctrl-C), not a
traceback. The errors verbs raise on purpose (``_HANDLED``) print their own
text; anything else prints as one line with its type. ``--debug`` (before
the verb) or ``SAMJAX_DEBUG=1`` lets the exception through instead, with its
traceback.

A verb that needs an extra (``samjax train``: ``train``, ``samjax data``:
``data``, ``samjax eval``: ``eval``) says so with ``set_defaults(extra=...)``;
when one of its packages is missing the command stops in one line naming the
extra (``samjax.extras``). Verbs import their heavy dependencies inside their
functions, so ``samjax --help`` and ``samjax segment/amg`` need only the base
install.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Environment variable that turns on --debug (e.g. for a command run by a script).
DEBUG_ENV = "SAMJAX_DEBUG"
# The errors verbs raise on purpose for a bad input; their text is the message.
_HANDLED = (FileNotFoundError, FileExistsError, ValueError, ImportError)

# (module, attribute) of each verb's ``register`` function, in --help order.
_VERBS = (
    ("samjax.commands.convert_weights", "register"),
    ("samjax.commands.segment", "register"),
    ("samjax.commands.amg", "register"),
    ("samjax.commands.train", "register"),
    ("samjax.commands.plan", "register"),
    ("samjax.commands.evaluate", "register"),
    ("samjax.commands.annotate", "register"),
    ("data_pipelines.cli", "register"),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="samjax",
      description="Segment Anything in JAX: convert weights, segment, label "
                  "images, build datasets, train and evaluate.",
      epilog="Compiled programs are cached between runs in ~/.cache/samjax/xla "
             "(SAMJAX_COMPILATION_CACHE=DIR to move it, =off to turn it off); "
             "`samjax plan` never uses the cache.")
  parser.add_argument("--debug", action="store_true",
                      help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")
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
  # Before jax loads: an installed libtpu (the `plan` extra) stays quiet on a
  # host without a TPU. The command line is samjax's own process; ``import
  # samjax`` sets nothing.
  from samjax.hardware import quiet_libtpu_without_tpu
  quiet_libtpu_without_tpu()
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra:
    if not getattr(args, "accepts_overrides", False):
      parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
  debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
  if getattr(args, "extra", None):
    from samjax.extras import MissingExtraError, require_extra
    try:
      require_extra(args.extra, f"samjax {args.verb}")
    except MissingExtraError as e:
      if debug:
        raise
      print(f"samjax {args.verb}: error: {e}", file=sys.stderr)
      return 1
  if getattr(args, "compile_cache", True):
    # A second run of a command loads its compiled programs instead of
    # compiling them again (samjax.compile_cache).
    from samjax.compile_cache import enable_compile_cache
    enable_compile_cache()
  try:
    return int(args.func(args) or 0)
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"samjax {args.verb}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # every failure of a verb ends here, as one line
    if debug:
      raise
    print(f"samjax {args.verb}: error: {_one_line(e)}", file=sys.stderr)
    return 1


def _one_line(e: Exception) -> str:
  """The message of ``e`` for a person: the text of an error a verb raised on
  purpose, else one line with the exception type (an unexpected error) and a
  pointer to --debug."""
  if isinstance(e, _HANDLED):
    return str(e)
  text = " ".join(str(e).split()) or "(no message)"
  return f"{type(e).__name__}: {text} (rerun with --debug for the traceback)"


if __name__ == "__main__":
  sys.exit(main())

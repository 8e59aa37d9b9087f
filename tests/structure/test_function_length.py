"""No function of ``samjax`` or ``data_pipelines`` is longer than 80 lines.

A function's length is ``end_lineno - lineno + 1`` of its ``def`` (its
decorators not counted; a nested function counts inside its parent and on
its own). A longer one is split into helpers named for what they do.

``ALLOWED_LONG_FUNCTIONS`` lists the exceptions still being rewritten; an
entry whose function is gone or back under the limit fails the test too, so
the list only ever shrinks.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("samjax", "data_pipelines")
MAX_LINES = 80

# "path::function name" of functions allowed over MAX_LINES for now. Empty:
# samjax/model/image_encoder.py::_scanned_blocks (92 lines at f608945) was the
# one entry, until its rewrite brought it under the limit. Add an entry only
# for a function whose split is under way, and remove it with the split.
ALLOWED_LONG_FUNCTIONS: frozenset[str] = frozenset()


def _function_lengths(source: str) -> list[tuple[int, str, int]]:
  """(line, name, length in lines) of every function and method in ``source``,
  nested ones included."""
  return [(node.lineno, node.name, node.end_lineno - node.lineno + 1)
          for node in ast.walk(ast.parse(source))
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _package_functions() -> dict[str, list[tuple[int, str, int]]]:
  """Every function of the packages, by file path relative to the repo."""
  return {path.relative_to(REPO).as_posix(): _function_lengths(path.read_text())
          for pkg in PACKAGES for path in sorted((REPO / pkg).rglob("*.py"))}


def _problems(functions: dict[str, list[tuple[int, str, int]]], allowed,
              max_lines: int = MAX_LINES) -> tuple[list[str], list[str]]:
  """(functions over ``max_lines`` not in ``allowed``, stale ``allowed``
  entries: their function is missing or no longer over the limit)."""
  too_long, still_long = [], set()
  for rel, found in functions.items():
    for line, name, length in sorted(found):
      if length <= max_lines:
        continue
      if f"{rel}::{name}" in allowed:
        still_long.add(f"{rel}::{name}")
      else:
        too_long.append(f"{rel}:{line} {name} ({length} lines)")
  return too_long, sorted(set(allowed) - still_long)


def test_no_function_is_longer_than_the_limit():
  too_long, _ = _problems(_package_functions(), ALLOWED_LONG_FUNCTIONS)
  assert not too_long, (f"functions over {MAX_LINES} lines (split them into helpers "
                        "named for what they do):\n" + "\n".join(too_long))


def test_the_allowlist_is_not_stale():
  _, stale = _problems(_package_functions(), ALLOWED_LONG_FUNCTIONS)
  assert not stale, ("ALLOWED_LONG_FUNCTIONS entries whose function is gone or no "
                     f"longer over {MAX_LINES} lines (remove them):\n" + "\n".join(stale))


def _function_source(name: str, lines: int) -> str:
  """A module holding one decorated function ``name`` of exactly ``lines``
  lines (the decorator not counted)."""
  body = [f"  x{i} = {i}" for i in range(lines - 2)]
  return "\n".join(["import functools", "", "@functools.cache", f"def {name}():",
                    *body, "  return 0", ""])


def test_the_check_flags_an_81_line_function():
  """The checker itself (so the tests above can fail): 81 lines is flagged,
  80 is not, and an allowlist entry must name a function still over the limit."""
  assert _function_lengths(_function_source("f", 81)) == [(4, "f", 81)]
  functions = {"pkg/a.py": _function_lengths(_function_source("long", 81)),
               "pkg/b.py": _function_lengths(_function_source("fits", 80))}
  assert _problems(functions, set()) == (["pkg/a.py:4 long (81 lines)"], [])
  assert _problems(functions, {"pkg/a.py::long"}) == ([], [])
  assert _problems(functions, {"pkg/a.py::long", "pkg/b.py::fits", "pkg/c.py::gone"}) == (
      [], ["pkg/b.py::fits", "pkg/c.py::gone"])

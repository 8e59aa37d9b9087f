"""Every file-system call on a user's path goes through the path layer.

``data_pipelines/storage.py`` (reads, listings, moves) and
``data_pipelines/atomic_io.py`` (writes) are the only modules of ``samjax``
and ``data_pipelines`` that may call ``open``, ``os.path``, ``shutil`` or
the file functions of ``os`` directly; everywhere else such a call would
turn ``gs://bucket/run`` into a local folder named ``gs:``. A call on a path
that can never be a user's (the package's own files, a temp folder the code
made itself) is allowed with a ``# local-only: <why>`` comment on its line.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("samjax", "data_pipelines")
PATH_LAYER = {"data_pipelines/storage.py", "data_pipelines/atomic_io.py"}
MARKER = "# local-only:"

# os functions that touch the file system by path.
OS_FILE_FUNCTIONS = {
    "open", "makedirs", "mkdir", "listdir", "scandir", "walk", "remove", "unlink",
    "rename", "replace", "rmdir", "removedirs", "stat", "lstat", "access", "chmod",
    "utime", "truncate", "symlink", "link", "readlink",
}
# Whole modules whose path functions count.
PATH_MODULES = {"shutil", "glob"}


def _dotted(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f"{_dotted(node.value)}.{node.attr}"
  return ""


def _offending(call: ast.Call) -> str | None:
  name = _dotted(call.func)
  if name == "open":
    return "open"
  head, _, last = name.rpartition(".")
  if head == "os.path" and last not in ("sep", "fspath"):
    # Pure string helpers are harmless on a local path but still wrong on a
    # bucket URL (os.path.join of "gs://b" works, abspath does not): all
    # of them go through storage.
    return name
  if head == "os" and last in OS_FILE_FUNCTIONS:
    return name
  if head in PATH_MODULES:
    return name
  return None


def _violations() -> list[str]:
  out = []
  for pkg in PACKAGES:
    for path in sorted((REPO / pkg).rglob("*.py")):
      rel = path.relative_to(REPO).as_posix()
      if rel in PATH_LAYER:
        continue
      lines = path.read_text().splitlines()
      for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.Call):
          continue
        what = _offending(node)
        if what is None:
          continue
        span = lines[node.lineno - 1:(node.end_lineno or node.lineno)]
        if any(MARKER in line for line in span):
          continue
        out.append(f"{rel}:{node.lineno}: {what}(...)")
  return out


def test_no_file_system_call_outside_the_path_layer():
  found = _violations()
  assert not found, ("file-system calls outside data_pipelines/storage.py and "
                     "atomic_io.py (route them through the path layer, or mark a "
                     f"path that is never a user's with '{MARKER} <why>'):\n"
                     + "\n".join(found))


def test_the_check_sees_a_violation(tmp_path):
  """The scanner itself flags each kind of call (so the test above can fail)."""
  src = ("import os, shutil\nopen('x')\nos.path.abspath('x')\nos.makedirs('x')\n"
         "shutil.move('a', 'b')\nos.path.join('a', 'b')  # local-only: test\n")
  calls = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)]
  flagged = sorted(filter(None, (_offending(c) for c in calls)))
  assert flagged == ["open", "os.makedirs", "os.path.abspath", "os.path.join",
                     "shutil.move"]

"""Package structure: no import cycles, and layering between the top-level
packages (a static check over every ``import``, also the ones inside
functions, which only hide a cycle until someone moves them)."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("samjax", "data_pipelines")


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for pkg in PACKAGES:
    for path in (REPO / pkg).rglob("*.py"):
      parts = path.relative_to(REPO).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      out[name] = path
  return out


def _imports(path: pathlib.Path, name: str, modules) -> set[str]:
  """Project modules ``name`` imports (``from pkg import mod`` counts as
  ``pkg.mod`` when ``mod`` is a module)."""
  found = set()
  is_pkg = path.name == "__init__.py"
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = name.split(".") if is_pkg else name.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        found.add(sub if sub in modules else base)
  return {m for m in found if m in modules and m != name}


def _graph():
  modules = _modules()
  return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      # A package's __init__ re-exporting its submodules is not a cycle.
      if node.startswith(nxt + "."):
        continue
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_detector_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layering():
  """data_pipelines never imports samjax at module level (spawned data workers
  stay light); nothing imports experiments/ or tests/."""
  for name, path in _modules().items():
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for m in mods:
          assert not m.startswith(("experiments", "tests")), f"{name} imports {m}"
          if name.startswith("data_pipelines"):
            assert not m.startswith("samjax"), f"{name} imports {m} at module level"

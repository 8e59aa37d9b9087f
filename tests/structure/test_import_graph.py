"""Package structure: no import cycles between modules nor between packages,
and layering between the top-level packages (a static check over every
``import``, also the ones inside functions, which only hide a cycle until
someone moves them)."""

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


def _graph(parents: bool = False):
  """{module: modules it imports}; unless ``parents``, without a module's
  imports of the packages above it (a package's __init__ re-exporting its
  submodules is not a module cycle)."""
  modules = _modules()
  return {name: {m for m in _imports(path, name, modules)
                 if parents or not name.startswith(m + ".")}
          for name, path in modules.items()}


def _layer(module: str) -> str:
  """The node of ``module`` in the package graph: ``data_pipelines`` whole,
  each sub-package of samjax (``samjax.train``, ...) whole, each top-level
  module of samjax (``samjax.loading``, ...) and samjax's own __init__
  (``samjax``) by itself."""
  parts = module.split(".")
  return parts[0] if parts[0] != "samjax" else ".".join(parts[:2])


def _package_graph(graph) -> dict[str, set[str]]:
  """``graph`` with each module replaced by its ``_layer``."""
  out = {}
  for name, deps in graph.items():
    out.setdefault(_layer(name), set()).update(_layer(d) for d in deps)
  return {node: deps - {node} for node, deps in out.items()}


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
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


def test_no_cycle_between_packages():
  """A package (or top-level module) below another never imports it back,
  even through a third: e.g. ``samjax.loading`` reads training checkpoints
  through ``samjax.checkpoints``, which ``samjax.train`` builds on too."""
  # With imports of ``samjax`` itself: its __init__ is a node like the others.
  graph = _package_graph(_graph(parents=True))
  assert {"samjax", "samjax.train", "samjax.loading", "data_pipelines"} <= set(graph)
  cycle = _cycle(graph)
  assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def test_package_graph_joins_modules_into_their_packages():
  graph = _package_graph({"samjax.train.loop": {"samjax.train.step", "samjax.formats"},
                          "samjax.train.step": set(), "samjax.formats": {"data_pipelines.io"},
                          "data_pipelines.io": {"samjax.inference.image_io"},
                          "samjax.inference.image_io": {"samjax.formats"}, "samjax": set()})
  assert graph == {"samjax.train": {"samjax.formats"}, "samjax.formats": {"data_pipelines"},
                   "data_pipelines": {"samjax.inference"},
                   "samjax.inference": {"samjax.formats"}, "samjax": set()}
  assert _cycle(graph) == ["data_pipelines", "samjax.inference", "samjax.formats",
                           "data_pipelines"]


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

"""The library's layers point one way and no module imports one that imports it back.

Every `import` in `interp/` is read with `ast`, those inside functions included (a deferred
import is still a dependency). A package may import packages on its own row of `LAYERS` or
below; nothing in `interp` imports `experiments` or `launch`; the module graph and the package
graph have no cycle. A new top-level package or module must be given a row here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "interp"

# Row -> the top-level parts of `interp` on it (shared/DESIGN.md's table).
LAYERS = {
    0: {"parallel", "choices", "jsonio", "config_flags", "usage", "precision"},
    1: {"models", "data"},
    2: {"train", "viz"},
    3: {"toy", "sae"},
    4: {"circuits", "induction", "ioi", "steering", "discovery"},
    5: {"graphs", "attribution"},
    6: {"figures", "bench"},
}
ROW = {part: row for row, parts in LAYERS.items() for part in parts}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
  """The modules `path` imports (`from pkg import mod` counts as pkg.mod when that is a module)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names
                 if f"{node.module}.{a.name}" in known)
  return out


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, set(modules)) for name, path in modules.items()}


def _part(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "interp" and len(parts) > 1 else None


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` (as a path that ends where it starts), or None."""
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt in graph and not state.get(nxt):
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if not state.get(node):
      found = visit(node)
      if found:
        return found
  return None


GRAPH = _graph()


def test_every_part_of_the_library_has_a_row():
  parts = {_part(m) for m in GRAPH} - {None}
  assert not parts - set(ROW), f"give these a row in LAYERS: {sorted(parts - set(ROW))}"


def test_no_import_points_up_a_layer():
  upward = []
  for module, imported in GRAPH.items():
    here = _part(module)
    for target in imported:
      there = _part(target)
      if here and there and there != here and ROW.get(there, 99) > ROW.get(here, 99):
        upward.append(f"{module} (row {ROW[here]}) imports {target} (row {ROW[there]})")
  assert not upward, "\n".join(sorted(upward))


def test_the_library_never_imports_binaries_or_launchers():
  bad = [f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
         if t.split(".")[0] in ("experiments", "launch", "tests")]
  assert not bad, "\n".join(bad)


def test_no_module_cycle():
  internal = {m: {t for t in ts if t in GRAPH and t != m} for m, ts in GRAPH.items()}
  cycle = _cycle(internal)
  assert cycle is None, " -> ".join(cycle)


def test_no_package_cycle():
  packages: dict[str, set[str]] = {}
  for module, imported in GRAPH.items():
    here = _part(module)
    if here:
      packages.setdefault(here, set()).update(
          p for p in map(_part, imported) if p and p != here)
  cycle = _cycle(packages)
  assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
  assert _cycle(graph) == expected

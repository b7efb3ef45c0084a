"""How the modules depend on each other: downward only, never in a circle.

The import graph is read from the sources (every ``import``, also inside functions; imports
under ``if TYPE_CHECKING:`` are for the type checker only and do not count), so these tests
see a dependency before it can bite at run time:

* no module imports itself back, however long the way round (a cycle);
* transports are places images live: none imports the engine, the session, the one-shot API
  or the package's public face (``hatchway``), which all sit above them;
* the engine never imports the session, the API or the command line;
* the pure core imports only the standard library and the pure core.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import hatchway

SRC = Path(hatchway.__file__).parent.parent

#: The pure core: parses, plans and computes bytes, and performs no I/O.
PURE = (
    "hatchway.reference",
    "hatchway.model",
    "hatchway.tarstream",
    "hatchway.formats",
    "hatchway.errors",
    "hatchway.progress",
    "hatchway.limits",
    "hatchway.oci_layout",
    "hatchway.results",
    "hatchway.transports.registry.targets",
)
#: Standard-library modules that do I/O or run things: not for the pure core.
IMPURE_STDLIB = ("asyncio", "socket", "threading", "subprocess", "shutil", "tempfile")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (what it names, resolved: ``from a import b`` is ``a.b``
    when that is a module, else ``a``), outside ``TYPE_CHECKING`` blocks."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - child.level + 1]
                    base = ".".join([*parts, *([child.module] if child.module else [])])
                for alias in child.names:
                    whole = f"{base}.{alias.name}"
                    found.add(whole if whole in MODULES else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


GRAPH = {name: {m for m in imports_of(name) if m in MODULES} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports
    itself (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read() -> None:
    """The graph is not empty by mistake: known edges are in it."""
    assert "hatchway.engine.copy" in GRAPH["hatchway.session"]
    assert "hatchway.cli.commands" in GRAPH["_hatchway_cli"]  # a function-level import
    assert "hatchway.errors" in GRAPH["hatchway.transports.archive.tarindex"]


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d"]]


def test_no_module_imports_itself_back() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("hatchway.transports")))
def test_transports_do_not_import_what_sits_above_them(name: str) -> None:
    above = ("hatchway.engine", "hatchway.session", "hatchway.api", "hatchway.cli")
    upward = sorted(
        m for m in GRAPH[name] if m == "hatchway" or m.startswith(above) or m == "_hatchway_cli"
    )
    assert upward == [], name


def test_the_engine_does_not_import_what_sits_above_it() -> None:
    for name in MODULES:
        if name.startswith("hatchway.engine"):
            above = ("hatchway.session", "hatchway.api", "hatchway.cli", "_hatchway_cli")
            assert not [m for m in GRAPH[name] if m == "hatchway" or m.startswith(above)], name


def test_pure_core_imports_no_io_library() -> None:
    """Every module of the pure core imports only the standard library and the pure core."""
    pure = [n for n in MODULES if n == "hatchway.transports" or n.startswith(PURE)]
    assert len(pure) > len(PURE)  # formats/ counts its modules
    for name in pure:
        for module in imports_of(name):
            top = module.split(".")[0]
            if top == "hatchway":
                assert module.startswith(PURE), (name, module)
            else:
                assert top in sys.stdlib_module_names, (name, module)
                assert top not in IMPURE_STDLIB, (name, module)

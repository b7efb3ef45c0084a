"""The public API is exported once and honestly, and the command line uses nothing else
(how the other modules depend on each other: tests/test_layering.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import hatchway


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(hatchway) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(hatchway, name)).__name__ == "module"}
    assert sorted(public - modules) == sorted(set(hatchway.__all__) - {"__version__"})
    for name in hatchway.__all__:
        assert hasattr(hatchway, name), name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "hatchway":
            found.update(f"hatchway.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_cli_uses_only_the_public_api() -> None:
    """The command line is an application of the library: it imports ``hatchway`` itself and
    its own modules, never the engine, the transports or any other internal module."""
    src = Path(hatchway.__file__).parent
    for path in sorted((src / "cli").glob("*.py")):
        for module in _imports(path):
            if module.split(".")[0] != "hatchway":
                continue
            internal = module != "hatchway" and not module.startswith("hatchway.cli")
            public = module.removeprefix("hatchway.") in hatchway.__all__
            assert public or not internal, (path.name, module)

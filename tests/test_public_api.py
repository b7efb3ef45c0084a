"""The public API is exported once and honestly; the pure core imports no I/O library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hatchway

PURE = [
    "hatchway.reference",
    "hatchway.model",
    "hatchway.tarstream",
    "hatchway.formats",
    "hatchway.errors",
    "hatchway.progress",
    "hatchway.limits",
    "hatchway.transports.layout.spec",
    "hatchway.transports.registry.targets",
]


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


def test_pure_core_imports_no_io_library() -> None:
    """Every module of the pure core imports only the standard library and the pure core."""
    src = Path(hatchway.__file__).parent
    files = [
        src / "reference.py",
        src / "model.py",
        src / "tarstream.py",
        src / "errors.py",
        src / "progress.py",
        src / "limits.py",
        src / "transports" / "__init__.py",
        src / "transports" / "layout" / "__init__.py",
        src / "transports" / "layout" / "spec.py",
        src / "transports" / "registry" / "targets.py",
        *sorted((src / "formats").glob("*.py")),
    ]
    for path in files:
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "hatchway":
                assert any(module == p or module.startswith(p + ".") for p in PURE), (path, module)
            else:
                assert top in sys.stdlib_module_names, (path, module)
                assert top not in ("asyncio", "socket", "threading", "subprocess"), (path, module)


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

"""The layering docs/architecture.md describes, read from the imports: the V2 package is a front door
over the core, so nothing in the core imports it (app/main.py, the composition root, wires it in)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.server import REPO

APP = REPO / "app"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_core_does_not_import_the_v2_front_door() -> None:
    core = [path for path in APP.rglob("*.py") if "v2" not in path.relative_to(APP).parts and path.name != "main.py"]
    assert core
    offenders = {
        str(path.relative_to(REPO)): sorted(module for module in _imports(path) if module.startswith("app.v2"))
        for path in core
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_only_the_runtime_imports_onnxruntime() -> None:
    outside = [
        str(path.relative_to(REPO))
        for path in APP.rglob("*.py")
        if "runtime" not in path.relative_to(APP).parts and "onnxruntime" in _imports(path)
    ]
    assert outside == []

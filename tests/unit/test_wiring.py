"""One wiring place: every kind of process (`serve`, `api`, `worker`,
`worker --burst`) gets its delivery workers and its routes.yaml watch from
router/runtime/wiring.py, and the HTTP side imports no delivery code."""

from __future__ import annotations

import ast
from pathlib import Path

ROUTER = Path(__file__).resolve().parents[2] / "router"
# What runs a process's delivery and reloads, and the one module that builds it.
BUILT_IN_RUNTIME_ONLY = {"Workers", "running_workers", "Reloader"}
WIRING = ROUTER / "runtime" / "wiring.py"
# Where they are defined (and may build their own parts).
DEFINED_IN = {ROUTER / "delivery" / "workers.py", ROUTER / "runtime" / "reload.py"}
HTTP_SIDE = [*ROUTER.glob("web/*.py"), *ROUTER.glob("web/ui/*.py")]


def _called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the module runs (not only for type checking)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_workers_and_the_reload_watch_are_built_only_in_the_runtime() -> None:
    builders = {}
    for path in ROUTER.rglob("*.py"):
        if path in DEFINED_IN:
            continue
        built = _called_names(ast.parse(path.read_text())) & BUILT_IN_RUNTIME_ONLY
        if built:
            builders[str(path.relative_to(ROUTER.parent))] = sorted(built)
    assert builders == {"router/runtime/wiring.py": sorted(BUILT_IN_RUNTIME_ONLY)}


def test_the_http_side_imports_no_delivery_module_itself() -> None:
    """Directly: it reaches the workers through router.runtime.wiring only."""
    for path in HTTP_SIDE:
        imported = _runtime_imports(ast.parse(path.read_text()))
        delivery = sorted(m for m in imported if m.startswith("router.delivery"))
        assert delivery == [], f"{path.name} imports {delivery}"

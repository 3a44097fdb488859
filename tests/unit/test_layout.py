"""The code's shape: no import cycle anywhere in router/ (its packages
included) or in bench/ (lazy and type-only imports counted too), each
package imports only those below it in the README's layout table, and that
table names every module."""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "router"
BENCH = ROOT / "bench"


def _package_modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of `package`, its subpackages'
    included (a package is its __init__.py)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _script_modules(folder: Path) -> dict[str, Path]:
    """The scripts of `folder` (bench/, bench/peers/): run from there, they
    import each other by their bare names."""
    return {path.stem: path for path in folder.glob("*.py")}


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports anywhere in its file
    (in a function, under `if TYPE_CHECKING:`). `from a import b` imports
    a.b when that is a module, else a; a package's __init__ run before its
    module is not counted (a package re-exporting its modules would be a
    cycle): a module imports what it uses from the module that defines it,
    never a name its own package's __init__ re-exports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                for alias in node.names:  # a module, or a name of `base`
                    module = f"{base}.{alias.name}"
                    targets.add(module if module in modules else base)
        graph[name] = {t for t in targets if t in modules} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through each module that is on one, each once,
    as "a -> b -> a"."""
    found: set[tuple[str, ...]] = set()
    for start in graph:
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue and start not in came_from:
            node = queue.popleft()
            for dep in sorted(graph[node]):
                if dep not in came_from:
                    came_from[dep] = node
                    queue.append(dep)
        if start in came_from:
            cycle = [start]
            while (node := came_from[cycle[-1]]) != start:
                cycle.append(node)
            cycle.reverse()  # start -> ... -> the module importing start
            first = cycle.index(min(cycle))
            found.add(tuple(cycle[first:] + cycle[:first]))
    return sorted(" -> ".join([*cycle, cycle[0]]) for cycle in found)


def test_no_import_cycles_in_the_router() -> None:
    cycles = _cycles(_imports(_package_modules(PACKAGE)))
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_import_cycles_in_the_benchmarks() -> None:
    for folder in (BENCH, BENCH / "peers"):
        cycles = _cycles(_imports(_script_modules(folder)))
        assert not cycles, f"import cycles in {folder.relative_to(ROOT)}/: " + "; ".join(cycles)


def test_the_cycle_check_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert _cycles(graph) == ["a -> b -> a", "a -> b -> c -> a", "d -> d"]


def test_the_readme_layout_table_names_every_module() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Project layout") :]
    named = set(re.findall(r"`(router/[\w/]+(?:\.py)?)`", table))
    folders = {n for n in named if n.endswith("/")}
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(ROOT).as_posix()
        assert rel in named or any(rel.startswith(f) for f in folders), (
            f"{rel} is missing from the README's layout table (itself or its folder)"
        )
    for rel in named:
        assert (ROOT / rel).exists(), f"the README's layout table names {rel}, which is gone"


def _layers() -> list[str]:
    """The router's packages in the README's layout table, top first."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Project layout") :]
    table = table[table.index("| path |") :].split("\n\n")[0]
    return re.findall(r"^\| `router/(\w+)/` \|", table, re.M)


def _upward(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Each import of a package by one listed below it in `layers` (top
    first): "module imports target"."""
    rank = {name: i for i, name in enumerate(layers)}

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return rank.get(parts[1]) if len(parts) > 1 else None

    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (a := layer(module)) is not None and (b := layer(target)) is not None and b < a
    )


def test_each_package_imports_only_the_packages_below_it_in_the_readme() -> None:
    layers = _layers()
    assert sorted(layers) == sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    upward = _upward(_imports(_package_modules(PACKAGE)), layers)
    assert upward == [], "imports of a package above (the README's layout table order)"


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"r.web.app": {"r.queue.keys"}, "r.queue.keys": {"r.web.app", "r.queue.lua"}}
    assert _upward(graph, ["web", "queue"]) == ["r.queue.keys imports r.web.app"]


# Written by `make bench`, not tracked (.gitignore).
GENERATED = "bench/results/"


def test_every_path_the_docs_name_exists() -> None:
    # Docs point readers at tests and modules as proof ("tests/x.py runs
    # this example"); a rename must not leave them pointing at nothing.
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += [
        ROOT / "router" / "queue" / "scripts.py",
        ROOT / "router" / "queue" / "lua" / "_lib.lua",
    ]
    named = re.compile(
        r"\b((?:tests|router|plugins|bench|docs)/[\w./-]*\w\.(?:py|lua|md|yaml|toml))"
    )
    missing = sorted(
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in docs
        for path in named.findall(doc.read_text())
        if not (ROOT / path).exists() and not path.startswith(GENERATED)
    )
    assert missing == []

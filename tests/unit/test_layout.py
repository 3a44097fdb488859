"""The package's shape: no import cycles (lazy and type-only imports
included), and the README's layout table names every module."""

from __future__ import annotations

import ast
import re

from tests.support import ROOT

PACKAGE = ROOT / "router"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = f"router.{path.stem}"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):  # every import, wherever it is
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("router")
            ):
                deps.add(node.module)
                if node.module == "router":
                    deps |= {f"router.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("router")}
        graph[name] = deps - {name, "router"}
    return graph


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    cycles.append(" -> ".join([*path, dep]))
                elif dep not in path and dep in graph:
                    stack.append((dep, [*path, dep]))
    assert not cycles, cycles


def test_the_readme_layout_table_names_every_module() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Project layout") :]
    named = set(re.findall(r"`(router/[\w/]+(?:\.py)?)`", table))
    for path in PACKAGE.glob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = f"router/{path.name}"
        assert rel in named, f"{rel} is missing from the README's layout table"
    for rel in named:
        assert (ROOT / rel).exists(), f"the README's layout table names {rel}, which is gone"


# Written by `make bench`, not tracked (.gitignore).
GENERATED = "bench/results/"


def test_every_path_the_docs_name_exists() -> None:
    # Docs point readers at tests and modules as proof ("tests/x.py runs
    # this example"); a rename must not leave them pointing at nothing.
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += [ROOT / "router" / "scripts.py", ROOT / "router" / "lua" / "_lib.lua"]
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

"""Fixtures of the fault suite, and the writer of docs/reliability.md.

Each test appends one row per fault it injected to the session's results;
when the session ran the full (`-m faults`) variants without `-k`, the
session-finish hook writes the table to docs/reliability.md. The fast
variants that `make test` runs never touch it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import REPO, Lab
from tests.faults.results import Recorder, Results, render

DOC = REPO / "docs" / "reliability.md"

RESULTS = pytest.StashKey[Results]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = Results()


@pytest.fixture()
def record(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(request.config.stash[RESULTS], request.node)


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        results = item.config.stash[RESULTS]
        outcome = "pass" if report.passed else ("skip" if report.skipped else "FAIL")
        for row in [*results.rows, *results.memory]:
            if row.nodeid == item.nodeid:
                row.outcome = outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.stash.get(RESULTS, None)
    if results is None or session.config.option.keyword:
        return  # a -k selection is a partial run: keep the published table
    rows = [r for r in results.rows if r.size == "full"]
    memory = [m for m in results.memory if m.size == "full"]
    if rows or memory:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(render(rows, memory) + _kept_sections())


# Sections of docs/reliability.md written by hand (each case there names the
# test that shows it); a faults run rewrites the tables above them only.
KEPT_FROM = "\n## Hostile and unlucky inputs"


def _kept_sections() -> str:
    try:
        text = DOC.read_text()
    except OSError:
        return ""
    at = text.find(KEPT_FROM)
    return text[at:] if at >= 0 else ""

"""The environment: every variable declared once, documented, and validated
at start with one line (as routes.yaml is)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.settings import Settings, SettingsError, documented_variables
from tests.delivery_support import run_cli
from tests.ingest_support import routes_file

README = Path(__file__).resolve().parent.parent / "README.md"


def _environment_table() -> set[str]:
    text = README.read_text()
    table = text[text.index("### Environment") :]
    table = table[: table.index("\n\n", table.index("| variable"))]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def test_every_variable_the_router_reads_is_in_the_readme() -> None:
    documented = _environment_table()
    assert set(documented_variables()) <= documented
    # BOT_URL is read by the shipped routes.yaml, not by the code.
    assert documented - set(documented_variables()) == {"BOT_URL"}


def test_no_module_reads_the_environment_behind_settings_back() -> None:
    router = Path(__file__).resolve().parent.parent / "router"
    for module in router.glob("*.py"):
        if module.name == "settings.py":
            continue
        text = module.read_text()
        assert not re.search(r"environ\.get\(|getenv\(|environ\[\"[A-Z_]+\"\](?! =)", text), module


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.port, s.log_level, s.ingest_deadline, s.header_timeout) == (3000, "info", 2.0, 10.0)
    assert s.redis_url is None and s.run_workers and not s.allow_eviction
    assert Settings.from_env({"ROUTER_SHUTDOWN_GRACE": "1500ms"}).shutdown_grace == 1.5
    assert Settings.from_env({"ROUTER_WORKERS": "off"}).run_workers is False
    assert Settings.from_env({"REDIS_URL": ""}).redis_url is None


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PORT", "abc", "1 to 65535"),
        ("PORT", "70000", "1 to 65535"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("ROUTER_APPENDFSYNC", "sometimes", "always, everysec, no"),
        ("ROUTER_SHUTDOWN_GRACE", "soon", "seconds"),
        ("ROUTER_INGEST_DEADLINE", "0", "more than 0"),
        ("ROUTER_WORKERS", "maybe", "1/true/yes/on"),
        ("ROUTER_MAX_PENDING_CONNECTIONS", "-1", "at least 1"),
        ("REDIS_URL", "localhost:6379", "redis://"),
    ],
)
def test_a_bad_value_refuses_to_start_with_one_line(
    tmp_path: Path, name: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert f"{name}={value!r}" in str(caught.value) and allowed in str(caught.value)
    routes = routes_file(tmp_path / "routes.yaml")
    done = run_cli("--routes", str(routes), "check", **{name: value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("router: environment error: ") and name in lines[0]

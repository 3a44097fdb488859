"""The environment: every variable declared once, documented, and validated
at start with one line (as routes.yaml is; at the start of a real process:
tests/process/test_settings.py)."""

from __future__ import annotations

import re

from router.config.settings import Settings, documented_variables
from tests.support import ROOT

README = ROOT / "README.md"


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
    router = ROOT / "router"
    for module in router.rglob("*.py"):
        if module == router / "config" / "settings.py":
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


def test_a_refused_redis_url_is_shown_without_its_password() -> None:
    """A REDIS_URL of the wrong scheme names the variable and the value,
    never the password in it (before: printed whole)."""
    import pytest

    from router.config.settings import SettingsError

    for url in (
        "http://admin:S3cretPassw0rd@redis:6379",
        "tcp://redis:6379?password=S3cretPassw0rd",
    ):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"REDIS_URL": url})
        message = str(refused.value)
        assert "S3cretPassw0rd" not in message and "REDIS_URL=" in message, message
        assert "redis:6379" in message and "***" in message, message


def test_tracing_is_on_only_with_an_otlp_endpoint() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended, as the
    OpenTelemetry SDK does; the traces endpoint is used as is and wins;
    unset or empty: off (docs/tracing.md)."""
    import pytest

    from router.config.settings import SettingsError

    assert Settings.from_env({}).traces_endpoint is None
    assert Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}).traces_endpoint is None
    on = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert on.traces_endpoint == "http://collector:4318/v1/traces"
    assert on.otel_service_name == "message-router"
    both = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp",
        }
    )
    assert both.traces_endpoint == "https://traces.example/otlp"
    with pytest.raises(SettingsError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT='collector:4317': "):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"})
    with pytest.raises(SettingsError, match="OTLP over HTTP") as refused:
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://u:S3cretPassw0rd@c:4317"})
    assert "S3cretPassw0rd" not in str(refused.value)
    with pytest.raises(SettingsError, match="OTEL_SERVICE_NAME"):
        Settings.from_env({"OTEL_SERVICE_NAME": " "})

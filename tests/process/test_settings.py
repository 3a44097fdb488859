"""The environment, validated at the start of `router check` as a process
with one line (as routes.yaml is)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from router.config.settings import Settings, SettingsError
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import routes_file


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PORT", "abc", "1 to 65535"),
        ("PORT", "70000", "1 to 65535"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("ROUTER_APPENDFSYNC", "sometimes", "always, everysec, no"),
        ("ROUTER_SHUTDOWN_GRACE", "soon", "seconds"),
        ("ROUTER_INGEST_DEADLINE", "0", "more than 0"),
        ("ROUTER_SHUTDOWN_GRACE", "100000000000000000", "at most 1 day"),
        ("ROUTER_ROUTES_POLL", "1441m", "at most 1 day"),
        ("ROUTER_WORKERS", "maybe", "1/true/yes/on"),
        ("ROUTER_MAX_PENDING_CONNECTIONS", "-1", "at least 1"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/router-metrics", "create it (mkdir -p)"),
        ("PROMETHEUS_MULTIPROC_DIR", "/dev/null", "an existing directory"),
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


@pytest.mark.parametrize("name", ["ROUTER_ADMIN_TOKEN", "ROUTER_METRICS_TOKEN"])
@pytest.mark.parametrize("value", ["   ", "\t", "s3cret-token-of-a-file-with-its-newline\n"])
def test_a_token_http_could_never_match_refuses_to_start(
    tmp_path: Path, name: str, value: str
) -> None:
    routes = routes_file(tmp_path / "routes.yaml")
    for command in ("check", "serve"):
        done = run_cli("--routes", str(routes), command, cwd=tmp_path, timeout=30, **{name: value})
        assert done.returncode == 2, (command, done)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"router: environment error: {name} (value not shown): ")
        assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_a_short_admin_token_starts_with_a_warning_naming_it(
    tmp_path: Path, clean_redis: str
) -> None:
    routes = routes_file(tmp_path / "routes.yaml")
    router = RouterProcess(
        tmp_path / "api.log",
        command="api",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_ADMIN_TOKEN="x",
        ROUTER_METRICS_TOKEN="a-metrics-token-long-enough",
    )
    try:
        router.start()
        warnings = [line for line in router.log_text().splitlines() if "WARNING" in line]
        short = [line for line in warnings if "ROUTER_ADMIN_TOKEN is 1 characters long" in line]
        assert len(short) == 1, router.log_text()
        assert "at least 16" in short[0]
        assert not any("ROUTER_METRICS_TOKEN" in line for line in warnings)
        # It works as configured: the token opens the admin API.
        answer = httpx.get(
            router.url + "/admin/destinations", headers={"authorization": "Bearer x"}
        )
        assert answer.status_code == 200
    finally:
        router.kill()


@pytest.mark.parametrize("command", ["api", "worker"])
def test_a_missing_metrics_directory_stops_the_start_with_one_line(
    tmp_path: Path, command: str
) -> None:
    """It was a traceback from prometheus-client, at the import of the metrics."""
    routes = routes_file(tmp_path / "routes.yaml")
    missing = str(tmp_path / "metrics-not-made")
    done = run_cli(
        "--routes",
        str(routes),
        command,
        cwd=tmp_path,
        timeout=30,
        REDIS_URL="redis://127.0.0.1:9",
        PROMETHEUS_MULTIPROC_DIR=missing,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"router: environment error: PROMETHEUS_MULTIPROC_DIR={missing!r}: allowed: "
        "an existing directory: create it (mkdir -p) or unset the variable"
    ]


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_a_ca_file_that_cannot_be_loaded_stops_what_opens_sinks(
    tmp_path: Path, content: bytes | None
) -> None:
    """SSL_CERT_FILE missing, or holding no certificate: `router check`
    refuses with one line naming it, even for an http destination (the
    file is loaded as sinks open); commands that open none are not stopped."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    routes = routes_file(tmp_path / "routes.yaml")
    done = run_cli("--routes", str(routes), "check", SSL_CERT_FILE=str(ca))
    assert done.returncode == 2, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"router: environment error: SSL_CERT_FILE={str(ca)!r}: cannot load")
    assert "unset the variable" in line
    listed = run_cli("--routes", str(routes), "plugins", SSL_CERT_FILE=str(ca))
    assert listed.returncode == 0, listed


def test_a_ca_file_of_one_pinned_self_signed_certificate_is_accepted(tmp_path: Path) -> None:
    """A destination's own self-signed certificate, not a CA (CA:FALSE), as
    the whole SSL_CERT_FILE: a trust anchor OpenSSL verifies against, so
    start-up takes it (the check refuses only a file with no certificate)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: no certificate to pin")
    cert = tmp_path / "pinned.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(tmp_path / "key.pem"), "-out", str(cert), "-subj", "/CN=bot"),
            *("-addext", "basicConstraints=critical,CA:FALSE"),
        ],
        check=True,
        capture_output=True,
    )
    routes = routes_file(tmp_path / "routes.yaml")
    done = run_cli("--routes", str(routes), "check", SSL_CERT_FILE=str(cert))
    assert done.returncode == 0, done

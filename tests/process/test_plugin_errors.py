"""Broken plugins, as an operator meets them: real `router` processes
finding real distributions (dist-info directories on PYTHONPATH, as pip
leaves them) whose plugin cannot be imported, whose hook raises, whose
sink refuses to start, or whose entry point is in the wrong group. Each
failure is one line naming the distribution, the entry point and the
error; it stops only what needs the plugin."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.plugin import fake_distribution
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import write_routes

MISSPELT = "[router]\nslackish = router_slackishh\n"  # the module is router_slackish

HOOK_RAISES = """
from router.plugin.hookspecs import hookimpl

@hookimpl
def router_sink_types():
    raise RuntimeError("boom while listing")
"""

SINK_REFUSES = """
from router.plugin.hookspecs import hookimpl
from router.plugin.sinks import SinkType

class Refusing:
    def __init__(self, options, context):
        raise ValueError("SLACKISH_TOKEN is empty")

@hookimpl
def router_sink_types():
    return [SinkType(name="slackish", factory=Refusing)]
"""

ORIGIN = "router-slackish 0.2.0 (entry point `slackish = router_slackishh`, group `router`)"


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_a_plugin_that_cannot_be_imported_is_one_line_and_stops_only_what_uses_it(
    tmp_path: Path,
) -> None:
    env = fake_distribution(tmp_path / "site", "router-slackish", MISSPELT)
    why = f"{ORIGIN}: cannot be imported: ModuleNotFoundError: No module named 'router_slackishh'"

    listed = run_cli("plugins", **env)
    assert listed.returncode == 1, listed.stderr
    assert f"broken: {why}" in listed.stdout.splitlines()
    assert any(line.startswith("chatbot: ") for line in listed.stdout.splitlines())
    assert "Traceback" not in listed.stderr

    unused = write_routes(tmp_path / "unused.yaml", "http://127.0.0.1:9/bot")
    check = run_cli("--routes", str(unused), "check", **env)
    assert check.returncode == 0, check.stderr
    assert _lines(check.stderr, "router-slackish") == [
        line for line in check.stderr.splitlines() if "WARNING" in line
    ]
    assert len(_lines(check.stderr, why)) == 1

    used = write_routes(tmp_path / "used.yaml", None, plugin="slackish")
    refused = run_cli("--routes", str(used), "check", **env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"router: config error: {used}:16: destinations.chatbot.plugin: "
        f"plugin 'slackish' cannot be used: {why}"
    ]


def test_a_hook_that_raises_is_listed_broken_and_the_router_serves_without_it(
    tmp_path: Path, clean_redis: str
) -> None:
    env = fake_distribution(
        tmp_path / "site",
        "router-boomish",
        "[router]\nboomish = router_boomish\n",
        {"router_boomish": HOOK_RAISES},
    )
    why = (
        "router-boomish 0.2.0 (entry point `boomish = router_boomish`, group `router`): "
        "its router_sink_types hook raised RuntimeError: boom while listing"
    )
    listed = run_cli("plugins", **env)
    assert listed.returncode == 1 and f"broken: {why}" in listed.stdout.splitlines()

    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    router = RouterProcess(
        tmp_path / "router.log", REDIS_URL=clean_redis, ROUTES_FILE=str(routes), **env
    )
    router.start()  # ready: the broken plugin stopped nothing
    try:
        warned = _lines(router.log_text(), why)
        assert len(warned) == 1 and "WARNING" in warned[0]
    finally:
        router.terminate()


def test_an_entry_point_in_a_misspelt_group_is_reported(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = fake_distribution(site, "router-slackish", "[routers]\nslackish = router_slackish\n")
    # Not a router plugin (it does not depend on the router): not reported.
    fake_distribution(site, "unrelated", "[routers]\nother = unrelated\n", requires=())
    listed = run_cli("plugins", **env)
    assert listed.returncode == 1
    assert _lines(listed.stdout, "broken: ") == [
        "broken: router-slackish 0.2.0 (entry point `slackish = router_slackish`, group "
        "`routers`): is never loaded: the router reads entry-point group `router` "
        "([project.entry-points.router] in pyproject.toml), not `routers`"
    ]
    used = write_routes(tmp_path / "used.yaml", None, plugin="slackish")
    refused = run_cli("--routes", str(used), "check", **env)
    assert refused.returncode == 2 and "group `routers`): is never loaded" in refused.stderr


def _refusing_sink(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = fake_distribution(
        tmp_path / "site",
        "router-slackish",
        "[router]\nslackish = router_slackish\n",
        {"router_slackish": SINK_REFUSES},
    )
    return env, write_routes(tmp_path / "routes.yaml", None, plugin="slackish")


REFUSED = (
    "destination chatbot: plugin 'slackish' of router-slackish 0.2.0 (entry point "
    "`slackish = router_slackish`, group `router`) failed to start: "
    "ValueError: SLACKISH_TOKEN is empty"
)


def test_check_builds_every_sink_so_what_passes_it_starts(tmp_path: Path) -> None:
    env, routes = _refusing_sink(tmp_path)
    check = run_cli("--routes", str(routes), "check", **env)
    assert check.returncode == 2
    assert check.stderr.strip().splitlines() == [f"router: config error: {routes}: {REFUSED}"]


def test_a_start_that_fails_logs_its_cause_in_one_line(tmp_path: Path, clean_redis: str) -> None:
    """Not the lifespan's ExceptionGroup as one line of literal \\n's: the
    cause, and its traceback at debug as traceback lines (JSON: escaped
    in its field)."""
    env, routes = _refusing_sink(tmp_path)
    for log_format in ("console", "json"):
        router = RouterProcess(
            tmp_path / f"{log_format}.log",
            REDIS_URL=clean_redis,
            ROUTES_FILE=str(routes),
            LOG_FORMAT=log_format,
            LOG_LEVEL="debug",
            **env,
        )
        router.start(wait=False)
        assert router.wait(60) != 0
        log = router.log_text()
        if log_format == "console":
            records = "\n".join(line for line in log.splitlines() if not line.startswith("  | "))
            assert "\\n" not in records and "Exception Group" not in records
            assert _lines(log, "ERROR") == [
                *_lines(log, f"ERROR router.api: startup failed: {REFUSED}"),
                *_lines(log, "ERROR uvicorn.error: Application startup failed. Exiting."),
            ]
            assert len(_lines(log, "ERROR")) == 2
            assert _lines(log, "  | ValueError: SLACKISH_TOKEN is empty")  # the traceback
        else:
            records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            errors = [r["message"] for r in records if r["level"] == "error"]
            assert errors == [f"startup failed: {REFUSED}", "Application startup failed. Exiting."]
            tracebacks = [r["traceback"] for r in records if "traceback" in r]
            assert any("ValueError: SLACKISH_TOKEN is empty\n" in t for t in tracebacks)

"""routes.yaml: a bad file refuses to start with ONE line naming the file,
the place (key path, line) and the fix; ${VAR} substitution. (`router
check` as a process: tests/process/test_config.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import ConfigError
from router.config.loading import load
from tests.support.routes import shipped_routes, write_yaml

GOOD = """\
routes:
  - path: /v1/store_message
    destinations: [chatbot]
    fields:
      mensaje: string
      wa_id: string
destinations:
  chatbot:
    plugin: chatbot
    url: http://127.0.0.1:8080/bot
    ordering_key: wa_id
    retry:
      initial: 1s
"""


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    """The error loading `path` raises: one line that starts with the file."""
    with pytest.raises(ConfigError) as info:
        load(str(path), env=env or {})
    message = str(info.value)
    assert message.splitlines() == [message], f"not one line: {message!r}"
    assert message.startswith(str(path)), message
    return message


def test_the_good_config_loads(tmp_path: Path) -> None:
    config = load(str(write_yaml(tmp_path, GOOD)), env={})
    assert [r.path for r in config.routes] == ["/v1/store_message"]
    chatbot = config.destinations["chatbot"]
    assert chatbot.ordering_key == "wa_id"
    assert chatbot.settings.retry.initial == 1.0
    assert chatbot.options.url == "http://127.0.0.1:8080/bot"


def test_an_outbound_rate_limit_loads_with_its_default_burst(tmp_path: Path) -> None:
    text = GOOD + "    rate_limit: {requests: 80, period: 1s}\n"
    limit = (
        load(str(write_yaml(tmp_path, text)), env={}).destinations["chatbot"].settings.rate_limit
    )
    assert limit is not None and (limit.requests, limit.period, limit.burst) == (80, 1.0, 2)
    assert (
        load(str(write_yaml(tmp_path, GOOD)), env={}).destinations["chatbot"].settings.rate_limit
        is None
    )


def test_the_shipped_routes_yaml_loads() -> None:
    config = load(str(shipped_routes()), env={})
    assert config.destinations["chatbot"].options.url == "http://localhost:8080/bot"
    assert config.routes[0].settings.max_body == 1024 * 1024


# (name, file text, what the one line must contain)
BAD: list[tuple[str, str, list[str]]] = [
    (
        "YAML syntax error",
        "routes:\n  - path: /a\n   destinations: [x]\n",
        [":3: ", "YAML syntax error", "fix the YAML"],
    ),
    ("unclosed bracket", "routes: [\n  - path: /a\n", [":2: ", "YAML syntax error"]),
    # An unclosed opener is named at ITS line, not where the parser gave up
    # (the next key, lines later), which is where the user must look.
    (
        "unclosed [ mid-file",
        "routes:\n  - path: /a\n    destinations: [x\n    fields:\n      a: string\n"
        "destinations:\n  x: {plugin: chatbot}\n",
        [":3: ", "YAML syntax error", "'['", "on line 4", "fix the YAML"],
    ),
    (
        "unclosed [ of the shipped file",  # README, "routes.yaml": its example
        "routes:\n  - path: /v1/store_message\n    destinations: [chatbot\n"
        "    # a comment\n    fields:\n      mensaje: string\n",
        [":3: ", "the '[' on this line is not closed", "but got a `key:` on line 5"],
    ),
    (
        "unclosed {",
        "destinations:\n  x: {plugin: chatbot\n  y: {plugin: chatbot}\n",
        [":2: ", "YAML syntax error", "'{'", "on line 3"],
    ),
    (
        "unclosed quote",
        "routes:\n  - path: '/a\n    destinations: [x]\n\ndestinations: {}\n",
        [":2: ", "YAML syntax error", "quote"],
    ),
    ("tab indentation", "routes:\n\t- path: /a\n", [":2: ", "YAML syntax error", "'\\t'"]),
    (
        "unsafe YAML tag",
        "routes: !!python/name:os.system\n",
        [":1: ", "YAML error", "python/name:os.system"],
    ),
    ("empty file", "", ["empty", "routes:", "destinations:"]),
    ("only comments", "# routes go here\n", ["empty"]),
    ("top level a list", "- path: /a\n- path: /b\n", [":1: ", "top level must be a mapping"]),
    ("top level a string", "routes\n", ["top level must be a mapping"]),
    (
        "unknown field at top level",
        GOOD + "destination:\n  x: 1\n",
        [":14: ", "unknown field `destination`", "allowed here: routes, destinations"],
    ),
    (
        "unknown field in a route",
        GOOD.replace("    fields:\n", "    feilds: {}\n    fields:\n"),
        [":4: ", "routes[0].feilds", "unknown field `feilds`", "allowed here: path,", "fields"],
    ),
    (
        "unknown field in a destination",
        GOOD.replace("    ordering_key:", "    ordering_keys:"),
        [
            ":11: ",
            "destinations.chatbot.ordering_keys",
            "unknown field `ordering_keys`",
            "ordering_key",
            "url",
        ],
    ),
    (
        "unknown field in retry",
        GOOD + "      max_dleay: 5s\n",
        [
            ":14: ",
            "destinations.chatbot.retry.max_dleay",
            "unknown field `max_dleay`",
            "allowed here: initial, factor, max_delay",
        ],
    ),
    (
        "wrong type",
        GOOD + "    max_in_flight: many\n",
        [":14: ", "destinations.chatbot.max_in_flight", "Expected `int`, got `str`"],
    ),
    (
        "wrong type in a list",
        GOOD.replace("[chatbot]", "chatbot"),
        [":3: ", "routes[0].destinations", "Expected `array`"],
    ),
    (
        "bad field type name",
        GOOD.replace("wa_id: string", "wa_id: str"),
        [":4: ", "routes[0].fields", "'str'", "allowed: ", "string"],
    ),
    (
        "duplicate destination name",
        GOOD + "  chatbot:\n    plugin: http\n    url: http://x\n",
        [":14: ", "destinations.chatbot", "duplicate key", "once"],
    ),
    (
        "duplicate key in a destination",
        GOOD.replace("    ordering_key: wa_id\n", "    url: http://other\n"),
        [":11: ", "destinations.chatbot.url", "duplicate key"],
    ),
    (
        "duplicate route path",
        GOOD.replace(
            "destinations:\n  chatbot:",
            "  - path: /v1/store_message\n    destinations: [chatbot]\ndestinations:\n  chatbot:",
        ),
        [":7: ", "routes[1].path", "duplicate path '/v1/store_message'", "each path once"],
    ),
    (
        "route path reserved by the router",
        GOOD.replace("/v1/store_message", "/healthz"),
        [":2: ", "routes[0].path", "'/healthz'", "choose another"],
    ),
    (
        "route path without slash",
        GOOD.replace("/v1/store_message", "v1/store_message"),
        [":2: ", "routes[0].path", "starts with '/'"],
    ),
    (
        "undefined destination",
        GOOD.replace("[chatbot]", "[chatbot, crm]"),
        [":3: ", "routes[0].destinations[1]", "'crm' is not defined", "defined: chatbot"],
    ),
    (
        "no routes",
        "routes: []\ndestinations:\n  chatbot:\n    plugin: chatbot\n    url: http://x\n",
        [":1: ", "routes", "at least one route"],
    ),
    (
        "missing routes",
        "destinations:\n  chatbot:\n    plugin: chatbot\n    url: http://x\n",
        ["missing required field `routes`"],
    ),
    (
        "unknown plugin",
        GOOD.replace("plugin: chatbot", "plugin: telegram"),
        [
            ":9: ",
            "destinations.chatbot.plugin",
            "'telegram' is not installed",
            "installed: ",
            "chatbot",
            "http",
        ],
    ),
    (
        "missing plugin",
        GOOD.replace("    plugin: chatbot\n", ""),
        [":8: ", "destinations.chatbot", "missing required field `plugin`"],
    ),
    (
        "destination not a mapping",
        GOOD.split("  chatbot:")[0] + "  chatbot: http://127.0.0.1/bot\n",
        [":8: ", "destinations.chatbot", "a destination is a mapping"],
    ),
    (
        "bad destination name",
        GOOD.replace("chatbot", "chat bot!"),
        ["destinations.chat bot!", "letters, digits"],
    ),
    (
        "bad duration",
        GOOD + "    timeout: 10 parsecs\n",
        [
            ":14: ",
            "destinations.chatbot.timeout",
            "invalid duration '10 parsecs'",
            "500ms, 10s, 1m, 2h",
        ],
    ),
    (
        "negative duration",
        GOOD.replace("initial: 1s", "initial: -1"),
        [":13: ", "destinations.chatbot.retry.initial", "must not be negative"],
    ),
    (
        "bad size",
        GOOD.replace("    fields:\n", "    max_body: 1 gallon\n    fields:\n"),
        [":4: ", "routes[0].max_body", "invalid size '1 gallon'", "512KiB, 1MiB"],
    ),
    (
        "fractional size",
        GOOD.replace("    fields:\n", "    max_body: 1.5MiB\n    fields:\n"),
        [":4: ", "routes[0].max_body", "invalid size"],
    ),
    (
        "lease not longer than timeout",
        GOOD + "    timeout: 60s\n",
        ["destinations.chatbot.lease", "longer than `timeout`"],
    ),
    (
        "retry factor below 1",
        GOOD + "      factor: 0.5\n",
        [":14: ", "destinations.chatbot.retry.factor", "at least 1"],
    ),
    (
        "missing url",
        GOOD.replace("    url: http://127.0.0.1:8080/bot\n", ""),
        [":8: ", "destinations.chatbot", "missing required field `url`"],
    ),
    (
        "url not http",
        GOOD.replace("http://127.0.0.1:8080/bot", "ftp://127.0.0.1/bot"),
        ["destinations.chatbot", "url must start with http:// or https://", "ftp://"],
    ),
    (
        "unknown option under a chatbot destination",
        GOOD + "    colour: blue\n",
        [
            ":14: ",
            "destinations.chatbot.colour",
            "unknown field `colour`",
            "url, headers, id_header",
        ],
    ),
    (
        "option of the wrong type",
        GOOD + "    headers: [a, b]\n",
        [":14: ", "destinations.chatbot.headers", "Expected `object`"],
    ),
    (
        "unset environment variable",
        GOOD.replace("http://127.0.0.1:8080/bot", "${BOT_URL}"),
        [
            ":10: ",
            "destinations.chatbot.url",
            "BOT_URL is not set",
            "set it or write ${BOT_URL:-default}",
        ],
    ),
    (
        "outbound rate limit of no requests",
        GOOD + "    rate_limit: {requests: 0, period: 1s}\n",
        [":14: ", "destinations.chatbot.rate_limit.requests", "must be at least 1"],
    ),
    (
        "outbound rate limit over no time",
        GOOD + "    rate_limit: {requests: 80, period: 0s}\n",
        [":14: ", "destinations.chatbot.rate_limit.period", "must be more than 0"],
    ),
    (
        "outbound rate limit without a burst",
        GOOD + "    rate_limit: {requests: 80, burst: 0}\n",
        [":14: ", "destinations.chatbot.rate_limit.burst", "must be at least 1"],
    ),
    (
        "outbound rate limit below the shards",
        GOOD + "    shards: 4\n    rate_limit:\n      requests: 3\n",
        [":16: ", "destinations.chatbot.rate_limit.requests", "at least `shards`"],
    ),
    (
        "outbound rate limit per sender",
        GOOD + "    rate_limit: {requests: 80, per: wa_id}\n",
        [":14: ", "rate_limit.per", "unknown field `per`", "requests, period, burst"],
    ),
    (
        "a status the circuit breaker should ignore that is no status",
        GOOD + "    circuit_breaker:\n      ignore_statuses: [404, 4x2]\n",
        [
            ":15: ",
            "destinations.chatbot.circuit_breaker.ignore_statuses[1]",
            "'4x2' is not a status",
            '"200-299"',
        ],
    ),
    (
        "key with a newline",
        GOOD + '    "col\\nour": 1\n',
        ["unknown field"],
    ),
]


@pytest.mark.parametrize(("text", "words"), [(t, w) for _, t, w in BAD], ids=[n for n, _, _ in BAD])
def test_bad_config_is_one_line_naming_file_place_and_fix(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    message = config_error(write_yaml(tmp_path, text))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_unreadable_files(tmp_path: Path) -> None:
    message = config_error(tmp_path / "missing.yaml")
    assert "cannot read" in message and "No such file" in message
    message = config_error(tmp_path)
    assert "cannot read" in message
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(GOOD.replace("chatbot\n", "chatbot # añejo\n").encode("latin-1"))
    message = config_error(latin1)
    assert "not UTF-8" in message


def test_env_var_unset_is_an_error_and_set_is_used(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, GOOD.replace("http://127.0.0.1:8080/bot", "${BOT_URL}"))
    assert "BOT_URL is not set" in config_error(path, env={"OTHER": "x"})
    config = load(str(path), env={"BOT_URL": "http://bot.internal:9000/in"})
    assert config.destinations["chatbot"].options.url == "http://bot.internal:9000/in"


def test_env_var_default(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path, GOOD.replace("http://127.0.0.1:8080/bot", "${BOT_URL:-http://fallback:1/bot}")
    )
    url = lambda env: load(str(path), env=env).destinations["chatbot"].options.url  # noqa: E731
    assert url({}) == "http://fallback:1/bot"
    assert url({"BOT_URL": ""}) == "http://fallback:1/bot"  # empty counts as unset
    assert url({"BOT_URL": "https://set:2/bot"}) == "https://set:2/bot"


def test_env_var_in_part_of_a_string_and_escaped_dollar(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        GOOD.replace("http://127.0.0.1:8080/bot", "http://${HOST}:${PORT:-8080}/bot?p=$$x"),
    )
    config = load(str(path), env={"HOST": "bot"})
    assert config.destinations["chatbot"].options.url == "http://bot:8080/bot?p=$x"


def test_env_var_value_is_not_yaml(tmp_path: Path) -> None:
    """A substituted value stays a string: it cannot inject YAML structure."""
    path = write_yaml(tmp_path, GOOD + "    headers:\n      Authorization: ${TOKEN}\n")
    config = load(str(path), env={"TOKEN": "Bearer a: b - [c] {d: e}"})
    assert config.destinations["chatbot"].options.headers == {
        "Authorization": "Bearer a: b - [c] {d: e}"
    }
    path = write_yaml(tmp_path, GOOD.replace("    fields:", "    id_field: ${FIELD}\n    fields:"))
    config = load(str(path), env={"FIELD": "a: b\n- [c]"})
    assert config.routes[0].settings.id_field == "a: b\n- [c]"
    # (A header value with a line break is refused, without showing it:
    # tests/unit/test_http_outbound_config.py.)


def test_env_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, GOOD.replace("http://127.0.0.1:8080/bot", "${ROUTER_TEST_URL}"))
    monkeypatch.setenv("ROUTER_TEST_URL", "http://from-env/bot")
    assert load(str(path)).destinations["chatbot"].options.url == "http://from-env/bot"

"""routes.yaml written to hurt: a YAML bomb, paths `check` passed but
`serve` could not build (or routed elsewhere), destination URLs without a
host or aimed at a cloud metadata service. Each is refused (or warned
about) by `router check` with one line naming the place. (`router check`
as a process: tests/process/test_config_hostile.py.)"""

from __future__ import annotations

import dataclasses
import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.exceptions import ImproperlyConfiguredException, NotFoundException
from litestar.utils import normalize_path

from router.config import (
    MAX_ALIAS_EXPANSION,
    MAX_NESTING,
    Config,
    ConfigError,
    Route,
    load_config,
)
from router.config.loading import load
from router.config.settings import Settings
from router.plugin.http_sink import HttpOptions
from router.plugin.sinks import SinkType
from router.web.app import create_app
from tests.support.routes import shipped_routes, write_yaml

# Nothing listens there; create_app connects only in its lifespan, never run here.
SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0")

GOOD = """\
routes:
  - path: /v1/store_message
    destinations: [chatbot]
destinations:
  chatbot:
    plugin: chatbot
    url: http://127.0.0.1:8080/bot
"""
URL_LINE = 7  # the line of `url:` in GOOD


def config_error(path: Path) -> str:
    """The error loading `path` raises: one line that starts with the file."""
    with pytest.raises(ConfigError) as info:
        load(str(path), env={})
    message = str(info.value)
    assert message.splitlines() == [message], f"not one line: {message!r}"
    assert message.startswith(f"{path}:"), message
    return message


# -- 1. YAML bombs ----------------------------------------------------------


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """a: 9 strings, b: 9 times a, c: 9 times b, ...: 9**9 values from 1 KB."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f"a: &a [{', '.join(['lol'] * width)}]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_inside_a_destination_names_the_option(tmp_path: Path) -> None:
    # 5 levels: 66,429 values repeated in e, past the bound, yet few enough
    # that the load finishes (and this test fails, not hangs) without it.
    text = GOOD + "    headers:\n" + textwrap.indent(billion_laughs(levels=5), " " * 6)
    message = config_error(write_yaml(tmp_path, text))
    # headers: is line 8, so e: is line 13.
    assert f"{tmp_path / 'routes.yaml'}:13: destinations.chatbot.headers.e: " in message
    assert f"more than {MAX_ALIAS_EXPANSION} values" in message


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = "routes: &r\n  - path: /a\n    destinations: *r\ndestinations: {}\n"
    message = config_error(write_yaml(tmp_path, text))
    assert f"{tmp_path / 'routes.yaml'}:1: routes: " in message
    assert f"nest deeper than {MAX_NESTING} levels" in message


@pytest.mark.parametrize("depth", [MAX_NESTING, 5000])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    text = "routes: " + "[" * depth + "]" * depth + "\n"
    message = config_error(write_yaml(tmp_path, text))
    assert f"nest deeper than {MAX_NESTING} levels" in message


def test_nesting_within_the_bound_is_read(tmp_path: Path) -> None:
    depth = MAX_NESTING - 5  # the document, destinations, chatbot, headers, X
    text = GOOD + "    headers:\n      X: " + "[" * depth + "]" * depth + "\n"
    message = config_error(write_yaml(tmp_path, text))
    assert "destinations.chatbot.headers: Expected `str`, got `array`" in message  # not depth


def test_single_use_aliases_keep_working(tmp_path: Path) -> None:
    """Anchors for shared settings: what aliases are for."""
    headers = "\n".join(f"      X-Header-{n}: value-{n}" for n in range(100))
    destinations = "\n".join(
        f"  bot{n}:\n    plugin: http\n    url: http://127.0.0.1:8080/bot{n}\n"
        "    headers: *headers\n    retry: *retry"
        for n in range(50)  # 50 x 100 headers: half the bound, repeated
    )
    text = (
        "routes:\n  - path: &path /v1/store_message\n    destinations: &all [chatbot, bot0]\n"
        "  - path: /v1/other\n    destinations: *all\n"
        "destinations:\n  chatbot:\n    plugin: chatbot\n    url: http://127.0.0.1:8080/bot\n"
        f"    headers: &headers\n{headers}\n"
        "    retry: &retry\n      initial: 1s\n      max_delay: 30s\n"
        f"{destinations}\n"
    )
    config = load(str(write_yaml(tmp_path, text)), env={})
    assert [r.path for r in config.routes] == ["/v1/store_message", "/v1/other"]
    assert config.routes[1].destinations == config.routes[0].destinations
    bot = config.destinations["bot49"]
    assert bot.options.headers["X-Header-99"] == "value-99"
    assert bot.settings.retry.max_delay == 30.0


MERGED = """\
x-bot: &bot
  plugin: chatbot
  url: http://127.0.0.1:8080/bot
  ordering_key: wa_id
  max_in_flight: 4
x-slow: &slow
  timeout: 20s
  max_in_flight: 2
routes:
  - path: /v1/store_message
    destinations: [a, b, c]
destinations:
  a:
    <<: *bot
  b:
    <<: *bot
    max_in_flight: 8
  c:
    <<: [*slow, *bot]
"""


def test_merge_keys_and_x_fields_share_settings(tmp_path: Path) -> None:
    """`<<` merges as in compose files: own keys win, then earlier merged
    mappings; top-level `x-` keys are ignored, a place for anchors."""
    config = load(str(write_yaml(tmp_path, MERGED)), env={})
    a, b, c = (config.destinations[n].settings for n in "abc")
    assert (a.max_in_flight, b.max_in_flight, c.max_in_flight) == (4, 8, 2)
    assert (a.timeout, c.timeout) == (10.0, 20.0)
    assert config.destinations["c"].options.url == "http://127.0.0.1:8080/bot"


def test_a_merge_of_a_scalar_is_refused_at_its_place(tmp_path: Path) -> None:
    text = MERGED.replace("    <<: [*slow, *bot]", "    <<: 3")
    message = config_error(write_yaml(tmp_path, text))
    assert message.endswith(
        "destinations.c: `<<` merges mappings only (an alias of one, or a list)"
    ), message


def test_merge_keys_count_against_the_alias_bound(tmp_path: Path) -> None:
    lines = ["x-l0: &l0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
    for n in range(1, 6):  # each level merges the one below ten times over
        merges = ", ".join(f"*l{n - 1}" for _ in range(10))
        lines.append(
            f"x-l{n}: &l{n} {{k: {{<<: [{merges}]}}, "
            + ", ".join(f"m{i}: {{<<: *l{n - 1}}}" for i in range(10))
            + "}"
        )
    text = "\n".join(lines) + "\n" + GOOD
    message = config_error(write_yaml(tmp_path, text))
    assert "YAML aliases repeat more than 10000 values" in message


def test_a_big_file_without_aliases_is_not_bounded(tmp_path: Path) -> None:
    """The bound counts values repeated by aliases, not values written out."""
    routes = [{"path": f"/v1/r{n}", "destinations": ["chatbot"]} for n in range(2000)]
    for route in routes:
        route["fields"] = {f"f{k}": "string" for k in range(5)}  # type: ignore[assignment]
    config = {
        "routes": routes,
        "destinations": {"chatbot": {"plugin": "chatbot", "url": "http://x"}},
    }
    path = tmp_path / "routes.yaml"
    path.write_text(json.dumps(config))  # some 16,000 values
    assert len(load(str(path), env={}).routes) == 2000


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2001-13-45", ["'2001-13-45'", "month must be in 1..12", "quote it"]),
        ("1" * 5000, ["'1111111111", "...'", "4300 digits", "quote it"]),
    ],
    ids=["impossible date", "5000-digit integer"],
)
def test_a_scalar_yaml_cannot_read_is_a_config_error(
    tmp_path: Path, value: str, words: list[str]
) -> None:
    message = config_error(write_yaml(tmp_path, GOOD + f"    max_in_flight: {value}\n"))
    assert f":{URL_LINE + 1}: destinations.chatbot.max_in_flight: YAML cannot read " in message
    for word in words:
        assert word in message, message
    assert "set_int_max_str_digits" not in message  # Python's advice is not the operator's


# -- 2. route paths: what `check` accepts, `serve` builds --------------------


def routes_file(tmp_path: Path, paths: list[str]) -> Path:
    config = {
        "routes": [{"path": p, "destinations": ["chatbot"]} for p in paths],
        "destinations": {"chatbot": {"plugin": "chatbot", "url": "http://127.0.0.1:8080/bot"}},
    }
    path = tmp_path / "routes.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def handler_name(app: Litestar, request_path: str, method: str = "POST") -> str | None:
    """The name of the handler Litestar routes a request for `request_path` to
    (the ASGI path, decoded, as the server hands it over)."""
    _, handler, *_ = app.asgi_router.handle_routing(
        path=normalize_path(request_path), method=method
    )
    return handler.name or handler.handler_name


OWN = "the router's own"
RULE = "a segment is letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @"

# (paths of the routes, index of the refused one, what the line says)
BAD_PATHS: list[tuple[list[str], int, list[str]]] = [
    (["/v1/store_message", "/v1/store_message/"], 1, ["duplicate path", "trailing '/'"]),
    (["/v1/store_message/", "/v1/store_message"], 1, ["duplicate path", "'/v1/store_message/'"]),
    (["/a", "/a/"], 1, ["duplicate path '/a/'"]),
    (["/schema"], 0, [OWN, "/schema and below"]),
    (["/schema/"], 0, [OWN]),
    (["/schema/swagger"], 0, [OWN, "/schema and below"]),
    (["/schema/openapi.json"], 0, [OWN]),
    (["/schema/anything/else"], 0, [OWN]),
    (["/admin"], 0, [OWN, "/admin and below"]),
    (["/admin/destinations/chatbot/dead/replay"], 0, [OWN]),
    (["/healthz/"], 0, [OWN, "/healthz and below"]),
    (["/healthz/deep"], 0, [OWN]),
    (["/readyz/"], 0, [OWN]),
    (["/metrics"], 0, [OWN, "/metrics and below"]),
    (["/metrics/v1"], 0, [OWN]),
    (["/ui"], 0, [OWN, "/ui and below"]),
    (["/ui/static/ui.js"], 0, [OWN]),
    (["/{x}"], 0, ["{parameter}", RULE]),
    (["/v1/{name:str}"], 0, ["{parameter}"]),
    (["/files/{rest:path}"], 0, ["{parameter}"]),
    (["/a//b"], 0, ["empty segment", RULE]),
    (["//"], 0, ["empty segment"]),
    (["/a", "/a//"], 1, ["empty segment"]),
    (["/a/../b"], 0, ["'..' segment", "and is not . or .."]),
    (["/./a"], 0, ["'.' segment"]),
    (["/a/.."], 0, ["'..' segment"]),
    (["/%41"], 0, ["%-escape", "decoded path"]),
    (["/a b"], 0, ["the character ' '", RULE]),
    (["/a\tb"], 0, ["the character '\\t'"]),
    (["/caf\u00e9"], 0, ["the character '\u00e9'"]),
    (["/a?b"], 0, ["the character '?'"]),
    (["/a#b"], 0, ["the character '#'"]),
    (["/a|b"], 0, ["the character '|'"]),
    (["/a\\b"], 0, ["the character '\\\\'"]),
    (["/a<b>"], 0, ["the character '<'"]),
    (["v1/store_message"], 0, ["starts with '/'"]),
]


@pytest.mark.parametrize(
    ("paths", "index", "words"), BAD_PATHS, ids=[repr(p[-1]) for p, _, _ in BAD_PATHS]
)
def test_a_path_serve_cannot_route_as_written_is_refused(
    tmp_path: Path, paths: list[str], index: int, words: list[str]
) -> None:
    message = config_error(routes_file(tmp_path, paths))
    assert f": routes[{index}].path: " in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def unchecked(paths: list[str]) -> Config:
    """A config with these route paths as `check` passed them before."""
    config = load(str(shipped_routes()), env={})
    template = config.routes[0]
    routes = tuple(
        Route(msgspec.structs.replace(template.settings, path=p), template.destinations)
        for p in paths
    )
    return dataclasses.replace(config, routes=routes)


@pytest.mark.parametrize(
    "paths",
    [
        ["/v1/store_message", "/v1/store_message/"],
        ["/schema"],
        ["/schema/swagger"],
        ["/schema/openapi.json"],
        ["/a", "/a//"],
        ["/{x}"],
    ],
    ids=repr,
)
def test_litestar_refuses_to_build_these(paths: list[str]) -> None:
    """What `serve` did with them: a framework traceback at start."""
    with pytest.raises(ImproperlyConfiguredException):
        create_app(SETTINGS, unchecked(paths))


def test_litestar_misroutes_these() -> None:
    """Built, but requests go elsewhere than the file says. (The other
    refused paths, e.g. /metrics, /a b, /schema/x, Litestar serves as
    written: the rule refuses them, Litestar would not.)"""
    # A {parameter} route catches every one-segment path.
    app = create_app(SETTINGS, unchecked(["/v1/{name:str}"]))
    assert handler_name(app, "/v1/anything") == "ingest:/v1/{name:str}"
    # A route over an admin path takes that destination's replay away.
    with_admin = dataclasses.replace(SETTINGS, admin_token="secret")
    app = create_app(with_admin, unchecked(["/admin/destinations/chatbot/dead/replay"]))
    assert handler_name(app, "/admin/destinations/chatbot/dead/replay") == (
        "ingest:/admin/destinations/chatbot/dead/replay"
    )
    assert handler_name(app, "/admin/destinations/crm/dead/replay") == "replay"
    # /healthz/ is /healthz: the health check's path takes messages.
    app = create_app(SETTINGS, unchecked(["/healthz/"]))
    assert handler_name(app, "/healthz") == "ingest:/healthz/"
    # /a//b is served at /a/b.
    app = create_app(SETTINGS, unchecked(["/a//b"]))
    assert handler_name(app, "/a/b") == "ingest:/a//b"
    # A request for /%41 reaches the app as /A (ASGI paths are decoded): no route.
    app = create_app(SETTINGS, unchecked(["/%41"]))
    with pytest.raises(NotFoundException):
        handler_name(app, "/A")
    # HTTP clients resolve dot segments and cut ?query and #fragment before
    # sending: the route is never asked for (httpx shown; curl does the same).
    assert httpx.URL("http://router/a/../b").path == "/b"
    assert httpx.URL("http://router/a?b").path == "/a"
    assert httpx.URL("http://router/a#b").path == "/a"


GOOD_PATHS: list[list[str]] = [
    ["/"],
    ["/v1/store_message/"],
    ["/a.b/c-d_e~f"],
    ["/a", "/a/b"],
    ["/", "/a/", "/a/b/"],
    ["/x@y!$&'()*+,;=:"],
    ["/...", "/.a", "/a..b"],  # dots that are not a whole . or .. segment
    ["/schemas", "/administrator", "/healthz-2", "/readyz.json", "/metrics_v2", "/v1/admin"],
    ["/uix", "/v1/ui", "/ui-2"],
    ["/" + "/".join(f"s{n}" for n in range(30))],
]

# Accepted, served, but Litestar's OpenAPI derives the same operationId for
# both (path words title-cased, separators dropped, repeats skipped), so
# GET /schema answers 500. The fix is in app.py: a unique operation_id per
# ingest handler; the config is fine.
SCHEMA_CLASHES: list[list[str]] = [
    ["/v1/A", "/v1/a"],
    ["/a-b", "/a/b"],
    ["/a_b", "/a.b"],
    ["/ab", "/ab/a"],
]


@pytest.mark.parametrize("paths", GOOD_PATHS + SCHEMA_CLASHES, ids=repr)
def test_check_and_serve_agree_on_tricky_paths(tmp_path: Path, paths: list[str]) -> None:
    config = load(str(routes_file(tmp_path, paths)), env={})
    assert [r.path for r in config.routes] == paths
    app = create_app(SETTINGS, config)  # what `serve` builds; raised before
    for path in paths:
        assert handler_name(app, path) == f"ingest:{path}"


@pytest.mark.parametrize("paths", GOOD_PATHS + SCHEMA_CLASHES, ids=repr)
def test_the_schema_renders_for_accepted_paths(tmp_path: Path, paths: list[str]) -> None:
    config = load(str(routes_file(tmp_path, paths)), env={})
    schema = create_app(SETTINGS, config).openapi_schema  # what GET /schema renders
    assert schema.paths is not None
    assert {normalize_path(p) for p in paths} <= set(schema.paths)


# -- 3. destination URLs ---------------------------------------------------


def with_url(tmp_path: Path, url: str) -> Path:
    return write_yaml(tmp_path, GOOD.replace("http://127.0.0.1:8080/bot", json.dumps(url)))


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http:///etc/passwd", ["names no host", "http://host[:port]/path"]),
        ("http://", ["names no host"]),
        ("https://:8443/bot", ["names no host"]),
        ("http://user@/bot", ["names no host"]),
        ("http://bot host/in", ["space or control character", "%20"]),
        ("http://bot/in box", ["space or control character"]),
        ("http://bot/in\tbox", ["space or control character"]),
        ("http://bot/in\x00", ["space or control character"]),
        ("http://bot/in\x7f", ["space or control character"]),
        ("http://bot/in\u0085", ["space or control character"]),
        (" http://bot/in", ["must start with http:// or https://"]),
        ("http://bot:99999/in", ["a port is a number from 1 to 65535"]),
        ("http://bot:0/in", ["a port is a number from 1 to 65535"]),
        ("http://[::1/in", ["not a valid URL"]),
    ],
    ids=repr,
)
def test_a_url_without_a_usable_host_is_refused(tmp_path: Path, url: str, words: list[str]) -> None:
    message = config_error(with_url(tmp_path, url))
    assert ": destinations.chatbot: " in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


METADATA_URLS = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://169.254.170.2/v2/credentials", "169.254.170.2"),  # ECS task role
    ("http://2852039166/", "169.254.169.254"),  # one decimal number
    ("http://0xa9fea9fe/", "169.254.169.254"),
    ("http://169.254.43518/", "169.254.169.254"),
    ("http://169.254.169.254.:80/", "169.254.169.254"),
    ("http://[fe80::1]/", "fe80::1"),
    ("http://[fe80::a%25eth0]:8080/bot", "fe80::a"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal"),
    ("http://METADATA.Google.Internal./", "metadata.google.internal"),
    ("https://metadata/computeMetadata/v1/", "metadata"),
]


@pytest.mark.parametrize(("url", "address"), METADATA_URLS, ids=[u for u, _ in METADATA_URLS])
def test_a_metadata_url_loads_with_a_warning_naming_the_place(
    tmp_path: Path, url: str, address: str
) -> None:
    path = with_url(tmp_path, url)
    config = load(str(path), env={})
    assert config.destinations["chatbot"].options.url == url
    assert len(config.warnings) == 1, config.warnings
    warning = config.warnings[0]
    assert warning.splitlines() == [warning]
    assert warning.startswith(f"{path}:{URL_LINE}: destinations.chatbot.url: {url!r} "), warning
    assert f"points at {address}, a link-local or cloud metadata address" in warning
    assert "make sure this destination is meant" in warning


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/bot",
        "https://bot.example.com/in?token=x",
        "http://bot.internal:9000/in",
        "http://10.0.0.5/in",
        "http://[::1]:8080/in",
        "http://169.253.255.255/",  # next to 169.254/16, not in it
        "http://metadata.example.com/",
        "http://localhost/metadata",
    ],
)
def test_a_normal_url_gives_no_warning(tmp_path: Path, url: str) -> None:
    assert load(str(with_url(tmp_path, url)), env={}).warnings == ()


def test_the_shipped_routes_yaml_gives_no_warning() -> None:
    assert load(str(shipped_routes()), env={}).warnings == ()


def test_the_http_plugin_warns_too(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        GOOD.replace("plugin: chatbot", "plugin: http").replace(
            "127.0.0.1:8080/bot", "169.254.169.254/"
        ),
    )
    (warning,) = load(str(path), env={}).warnings
    assert f":{URL_LINE}: destinations.chatbot.url: " in warning


class ShoutingOptions(msgspec.Struct, forbid_unknown_fields=True):
    volume: int = 1

    def config_warnings(self) -> list[str]:
        return ["volume: very loud\nindeed", "the plugin is experimental", "colour: not an option"]


def test_plugin_warnings_are_placed_at_their_option_or_the_destination(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        GOOD.replace("plugin: chatbot", "plugin: shout").replace(
            "    url: http://127.0.0.1:8080/bot\n", "    volume: 11\n"
        ),
    )
    shout = SinkType(name="shout", factory=lambda *_: None, options=ShoutingOptions)  # type: ignore[arg-type]
    config = load_config(str(path), {"shout": shout}, env={})
    assert config.warnings == (
        f"{path}:7: destinations.chatbot.volume: very loud indeed",
        f"{path}:5: destinations.chatbot: the plugin is experimental",
        f"{path}:5: destinations.chatbot: colour: not an option",
    )


def test_options_without_config_warnings_give_none(tmp_path: Path) -> None:
    class Quiet(msgspec.Struct):
        pass

    path = write_yaml(
        tmp_path,
        GOOD.replace("plugin: chatbot", "plugin: quiet").replace(
            "    url: http://127.0.0.1:8080/bot\n", ""
        ),
    )
    quiet = SinkType(name="quiet", factory=lambda *_: None, options=Quiet)  # type: ignore[arg-type]
    assert load_config(str(path), {"quiet": quiet}, env={}).warnings == ()


def test_http_options_refuse_and_warn_outside_routes_yaml_too() -> None:
    """The checks live on the options: any plugin built on HttpOptions has them."""
    with pytest.raises(msgspec.ValidationError, match="names no host"):
        msgspec.convert({"url": "http:///etc/passwd"}, HttpOptions)
    options: Any = msgspec.convert({"url": "http://2852039166/"}, HttpOptions)
    assert options.config_warnings()[0].startswith("url: 'http://2852039166/' points at ")

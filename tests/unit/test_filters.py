"""Content routing filters (router.config.filters): every operator and combinator,
nested paths, missing values, JSON type strictness, and the one-line
config errors a bad filter or path gives (docs/content-routing.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.config.filters import MISSING, FilterError, compile_filter, compile_path, split_path
from router.config.loading import load
from tests.support.routes import write_yaml
from tests.unit.test_config import config_error

MESSAGE: dict[str, Any] = {
    "message": {"type": "image", "from": "4477001", "size": 3, "caption": None},
    "entry": [{"id": "e0", "tags": ["a", "b"]}, {"id": "e1"}],
    "meta.version": "2",
    "flag": True,
    "count": 1,
    "ratio": 1.0,
    "labels": {"0": "zero"},
}


def matches(spec: Any, message: Any = MESSAGE) -> bool:
    return compile_filter(spec)(message)


# -- paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("flag", True),
        ("message.type", "image"),
        ("message.caption", None),  # null is a value
        ("entry.0.id", "e0"),
        ("entry.1.id", "e1"),
        ("entry.0.tags.1", "b"),
        ("labels.0", "zero"),  # digits on an object are a key
        ("meta\\.version", "2"),  # an escaped dot is part of the key
        ("message.nothing", MISSING),
        ("entry.2.id", MISSING),  # past the end
        ("message.type.length", MISSING),  # into a string
        ("count.0", MISSING),  # into a number
        ("meta.version", MISSING),  # a dot separates: {"meta": {"version"}} is absent
        ("entry.-1", MISSING),  # no negative indexes
    ],
)
def test_a_path_reads_nested_values(path: str, value: Any) -> None:
    assert compile_path(path)(MESSAGE) is value or compile_path(path)(MESSAGE) == value


def test_a_path_on_something_not_an_object_is_missing() -> None:
    assert compile_path("a")(None) is MISSING
    assert compile_path("a.b")(["x"]) is MISSING


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["non-empty string"]),
        ("a..b", ["'a..b'", "empty segment"]),
        (".a", ["empty segment"]),
        ("a.", ["empty segment"]),
        ("a\\b", ["backslash escapes"]),
        ("a\\", ["backslash escapes"]),
        (3, ["non-empty string", "3"]),
    ],
)
def test_a_bad_path_is_refused_naming_it(text: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        split_path(text)
    for word in words:
        assert word in str(info.value)


# -- operators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"path": "message.type", "equals": "image"}, True),
        ({"path": "message.type", "equals": "text"}, False),
        ({"path": "message.missing", "equals": "image"}, False),
        ({"path": "message.caption", "equals": None}, True),
        ({"path": "message.missing", "equals": None}, False),  # missing is not null
        ({"path": "message.type", "in": ["text", "image"]}, True),
        ({"path": "message.type", "in": ["text", "video"]}, False),
        ({"path": "message.missing", "in": ["image"]}, False),
        ({"path": "message.caption", "exists": True}, True),
        ({"path": "message.missing", "exists": True}, False),
        ({"path": "message.missing", "exists": False}, True),
        ({"path": "entry.0.id", "exists": False}, False),
        ({"path": "message.from", "prefix": "44"}, True),
        ({"path": "message.from", "prefix": "33"}, False),
        ({"path": "message.from", "prefix": ""}, True),
        ({"path": "message.missing", "prefix": ""}, False),
    ],
)
def test_each_operator(spec: dict[str, Any], expected: bool) -> None:
    assert matches(spec) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # JSON-typed: the string "1" is not the number 1, true is not 1.
        ({"path": "count", "equals": "1"}, False),
        ({"path": "count", "equals": 1}, True),
        ({"path": "count", "equals": True}, False),
        ({"path": "flag", "equals": 1}, False),
        ({"path": "flag", "equals": True}, True),
        ({"path": "count", "equals": 1.0}, True),  # numbers compare as numbers
        ({"path": "ratio", "equals": 1}, True),
        ({"path": "count", "in": ["1", True]}, False),
        ({"path": "count", "in": [2, 1]}, True),
        ({"path": "flag", "in": [1, 0]}, False),
        ({"path": "message.size", "prefix": "3"}, False),  # prefix: strings only
        ({"path": "entry", "equals": "e0"}, False),  # an array is not a scalar
    ],
)
def test_equality_is_json_typed(spec: dict[str, Any], expected: bool) -> None:
    assert matches(spec) is expected


def test_all_any_not_combine() -> None:
    image = {"path": "message.type", "equals": "image"}
    text = {"path": "message.type", "equals": "text"}
    uk = {"path": "message.from", "prefix": "44"}
    assert matches({"all": [image, uk]})
    assert not matches({"all": [image, text]})
    assert matches({"any": [text, uk]})
    assert not matches({"any": [text, {"not": uk}]})
    assert matches({"not": text})
    assert not matches({"not": {"not": text}})
    assert matches({"all": [image]})  # one item is that item
    nested = {
        "any": [{"all": [text, uk]}, {"all": [image, {"not": {"path": "x", "exists": True}}]}]
    }
    assert matches(nested)
    assert not matches(nested, {"message": {"type": "image"}, "x": 0})


def test_any_stops_at_the_first_match() -> None:
    # A filter after the match is never evaluated: the message below would
    # raise in nothing, but all/any short-circuit as Python's do.
    calls = []

    class Probe(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            calls.append(key)
            return super().get(key, default)

    probe = Probe(a=1, b=2)
    assert compile_filter({"any": [{"path": "a", "exists": True}, {"path": "b", "exists": True}]})(
        probe
    )
    assert calls == ["a"]


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "where", "words"),
    [
        ("image", (), ["a filter is a mapping"]),
        ({}, (), ["a filter is a mapping"]),
        ({"path": "a", "equal": 1}, ("equal",), ["unknown key `equal`", "allowed: path, equals"]),
        ({"path": "a"}, (), ["needs one of equals, in, exists, prefix"]),
        ({"equals": 1}, (), ["`equals` needs a `path`"]),
        ({"path": "a", "equals": 1, "in": [1]}, ("in",), ["`equals` and `in`", "one operator"]),
        ({"all": []}, ("all",), ["`all` takes a non-empty list"]),
        ({"any": {"path": "a"}}, ("any",), ["`any` takes a non-empty list"]),
        ({"all": [{"path": "a", "exists": True}], "path": "b"}, ("path",), ["stands alone"]),
        ({"not": []}, ("not",), ["a filter is a mapping"]),
        ({"path": "a..b", "exists": True}, ("path",), ["empty segment"]),
        ({"path": 7, "exists": True}, ("path",), ["non-empty string"]),
        ({"path": "a", "exists": "yes"}, ("exists",), ["true or false"]),
        ({"path": "a", "in": []}, ("in",), ["non-empty list"]),
        ({"path": "a", "in": "x"}, ("in",), ["non-empty list"]),
        ({"path": "a", "in": ["x", ["y"]]}, ("in", 1), ["string, number, boolean or null"]),
        ({"path": "a", "equals": {"b": 1}}, (), ["got dict"]),
        ({"path": "a", "equals": float("nan")}, ("equals",), ["nan"]),
        ({"path": "a", "prefix": 44}, ("prefix",), ["write it quoted", '"44"']),
        (
            {"any": [{"path": "a", "exists": True}, {"all": [{"path": "b", "prefix": 1}]}]},
            ("any", 1, "all", 0, "prefix"),
            ["`prefix` is a string"],
        ),
    ],
)
def test_a_bad_filter_names_its_place(spec: Any, where: tuple[Any, ...], words: list[str]) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(spec)
    assert info.value.where[: len(where)] == where
    for word in words:
        assert word in info.value.message


# -- in routes.yaml ---------------------------------------------------------------

ROUTES = """\
routes:
  - path: /in
    destinations:
      - name: media
        when: {path: message.type, equals: image}
      - analytics
destinations:
  media: {plugin: http, url: "http://127.0.0.1:9/m", ordering_key: message.from}
  analytics: {plugin: http, url: "http://127.0.0.1:9/a"}
"""


def test_a_route_mixes_names_and_filtered_destinations(tmp_path: Path) -> None:
    config = load(str(write_yaml(tmp_path, ROUTES)), env={})
    route = config.routes[0]
    assert [d.name for d in route.destinations] == ["media", "analytics"]
    media, analytics = route.filters
    assert analytics is None and media is not None
    assert media({"message": {"type": "image"}}) and not media({"message": {"type": "text"}})
    assert route.settings.on_no_match == "accept"


def test_a_route_without_filters_has_nothing_to_evaluate(tmp_path: Path) -> None:
    text = ROUTES.replace(
        "      - name: media\n        when: {path: message.type, equals: image}\n",
        "      - {name: media}\n",
    )
    assert load(str(write_yaml(tmp_path, text)), env={}).routes[0].filters == ()


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "equals: image}",
            "equals: image, in: [a]}",
            [":5: ", "routes[0].destinations[0].when.in", "one operator per filter"],
        ),
        (
            "{path: message.type, equals: image}",
            "{all: []}",
            [":5: ", "routes[0].destinations[0].when.all", "non-empty list"],
        ),
        (
            "path: message.type",
            "path: message..type",
            [":5: ", "routes[0].destinations[0].when.path", "empty segment"],
        ),
        (
            "equals: image}",
            "equal: image}",
            [":5: ", "when.equal", "unknown key `equal`"],
        ),
        (
            "        when:",
            "        whn:",
            [":5: ", "routes[0].destinations[0].whn", "unknown field `whn`", "name, when"],
        ),
        (
            "      - analytics\n",
            "      - analytics\n      - media\n",
            [":3: ", "routes[0].destinations", "listed twice"],
        ),
        (
            "      - name: media\n",
            "      - name: medai\n",
            [":4: ", "routes[0].destinations[0]", "'medai' is not defined"],
        ),
        (
            "ordering_key: message.from",
            "ordering_key: message.",
            [":8: ", "destinations.media.ordering_key", "empty segment"],
        ),
        (
            # An empty `when:` (a filter deleted by mistake) is no filter at all.
            "when: {path: message.type, equals: image}",
            "when:",
            [":5: ", "routes[0].destinations[0].when", "is empty", "remove `when:`"],
        ),
        (
            "  - path: /in\n",
            "  - path: /in\n    on_no_match: drop\n",
            [":3: ", "routes[0].on_no_match", "allowed: accept, reject"],
        ),
    ],
)
def test_a_bad_filter_in_routes_yaml_is_one_line(
    tmp_path: Path, old: str, new: str, words: list[str]
) -> None:
    assert old in ROUTES
    message = config_error(write_yaml(tmp_path, ROUTES.replace(old, new)))
    for word in words:
        assert word in message, message


def test_on_no_match_needs_a_filter(tmp_path: Path) -> None:
    text = ROUTES.replace(
        "      - name: media\n        when: {path: message.type, equals: image}\n",
        "      - {name: media}\n",
    )
    text = text.replace("  - path: /in\n", "  - path: /in\n    on_no_match: reject\n")
    message = config_error(write_yaml(tmp_path, text))
    assert "routes[0].on_no_match" in message and "only a route with a `when:`" in message


def test_a_yaml_date_is_refused_with_the_advice_to_quote_it(tmp_path: Path) -> None:
    text = ROUTES.replace("equals: image", "equals: 2024-01-01")
    message = config_error(write_yaml(tmp_path, text))
    assert "when.equals" in message and "got date" in message and "quote it" in message


def test_a_dotted_ordering_key_is_read_nested_and_says_so(tmp_path: Path) -> None:
    """Before content routing `ordering_key: user.id` named a top-level field
    "user.id"; now it reads {"user": {"id": ...}}. A config that means the
    old reading loads with a warning naming the place and the escape."""
    config = load(str(write_yaml(tmp_path, ROUTES)), env={})
    [warning] = [w for w in config.warnings if "ordering_key" in w]
    assert ":8: destinations.media.ordering_key" in warning
    assert "`message` -> `from`" in warning and "`message\\.from`" in warning
    escaped = ROUTES.replace("ordering_key: message.from", "ordering_key: message\\.from")
    plain = load(str(write_yaml(tmp_path, escaped)), env={})
    assert not [w for w in plain.warnings if "ordering_key" in w]

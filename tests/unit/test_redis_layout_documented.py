"""Every Redis key the code can name is in the README's "Redis layout" table,
and every key in that table is one the code names (datasette's
`test_settings_are_documented` is the model).

The key names are found by introspecting router/queue/keys.py, not listed here: a
key added there fails this test until the README documents it."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

from router.queue import keys
from router.queue.keys import DestinationKeys, RouteKeys, all_shards, shard_tag
from tests.support import ROOT

README = ROOT / "README.md"

DESTINATION = "chatbot"
# One shard (the default) and four: every shard of each.
LAYOUTS = (1, 4)
# Names in router/queue/keys.py that return a str but are not keys.
NOT_KEYS = {
    "tag": "the hash tag every key of a shard starts with (the README's prose)",
    "shard_tag": "the same, as a function",
}
# Sample arguments by parameter name; any other str parameter gets its name.
SAMPLES: dict[str, Any] = {"destination": DESTINATION, "shard": 1, "shards": 4}
# What the README writes for the hash tag of one shard.
TAG = "{rt:D}"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Redis layout")
    return text[start : text.index("\n## ", start + 1)]


def _documented() -> list[str]:
    """The first column of the section's key table, as written."""
    section = _section()
    table = section[section.index("| key |") :]
    table = table[: table.index("\n\n")]
    names = []
    for row in table.splitlines()[2:]:
        (name,) = re.findall(r"`([^`]+)`", row.split("|")[1])
        names.append(name)
    return names


def _pattern(documented: str) -> re.Pattern[str]:
    """A documented key as a regex: each `<placeholder>` stands for any value."""
    parts = re.split(r"<[^<>]+>", documented)
    return re.compile(".+".join(re.escape(part) for part in parts))


def _call(function: Callable[..., Any]) -> Any:
    arguments = []
    for name in inspect.signature(function).parameters:
        if name == "self":
            continue
        arguments.append(SAMPLES.get(name, f"sample-{name}"))
    return function(*arguments)


def _tags() -> list[str]:
    return [k.tag for shards in LAYOUTS for k in all_shards(DESTINATION, shards)]


def _as_documented(name: str) -> str:
    """`name` with the sample destination's hash tag written as the README does."""
    for tag in _tags():
        if name.startswith(tag):
            return TAG + name[len(tag) :]
    return name


def _key_names() -> Iterator[tuple[str, str]]:
    """(where it comes from, key name as the README writes it) for every key
    router/queue/keys.py can name, for every shard of every sample layout."""
    members = [
        (name, member)
        for name, member in vars(DestinationKeys).items()
        if not name.startswith("_")
        and name not in NOT_KEYS
        and (isinstance(member, property) or inspect.isfunction(member))
    ]
    assert {"ready", "lane", "seen"} <= {name for name, _ in members}  # introspection works
    for shards in LAYOUTS:
        for k in all_shards(DESTINATION, shards):
            for name, member in members:
                if isinstance(member, property):
                    value = getattr(k, name)
                else:
                    value = _call(getattr(k, name))
                if value.endswith(":"):  # a prefix (lane_prefix): the key it starts
                    value += "sample"
                yield f"DestinationKeys.{name} of {k}", _as_documented(value)
    # A route's keys (router.queue.unroutable), for a sample route path.
    route = RouteKeys("/sample")
    for name, member in vars(RouteKeys).items():
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            yield f"RouteKeys.{name}", getattr(route, name)
        elif inspect.isfunction(member):
            yield f"RouteKeys.{name}", _call(getattr(route, name))
    functions = [
        (name, function)
        for name, function in vars(keys).items()
        if inspect.isfunction(function)
        and function.__module__ == keys.__name__
        and not name.startswith("_")
        and name not in NOT_KEYS
        and inspect.signature(function).return_annotation in (str, "str")
    ]
    assert {"rate_limit_key", "shard_count_key"} <= {name for name, _ in functions}
    for name, function in functions:
        yield f"keys.{name}", _as_documented(_call(function))


def test_every_redis_key_is_documented() -> None:
    patterns = [_pattern(name) for name in _documented()]
    missing = {
        f"{where}: {name}"
        for where, name in _key_names()
        if not any(p.fullmatch(name) for p in patterns)
    }
    assert not missing, "not in the README's Redis layout table:\n" + "\n".join(sorted(missing))


def test_every_documented_key_is_one_the_code_names() -> None:
    names = {name for _, name in _key_names()}
    stale = [d for d in _documented() if not any(_pattern(d).fullmatch(n) for n in names)]
    assert not stale, f"in the README's Redis layout table, named by no code: {stale}"


def test_the_shard_tags_are_the_documented_forms() -> None:
    """`{rt:D}` for one shard; `{rt:D:i}` or `{rt:D:i:n}` for shard i of
    several, as the section's prose writes them."""
    forms = set(re.findall(r"`(\{rt:D[^`]*\})`", _section()))
    assert {"{rt:D}", "{rt:D:i}", "{rt:D:i:n}"} <= forms
    assert shard_tag(DESTINATION, 0, 1) == "{rt:chatbot}"
    for shards in LAYOUTS[1:]:
        for i in range(shards):
            tag = shard_tag(DESTINATION, i, shards)
            assert re.fullmatch(rf"\{{rt:{DESTINATION}:{i}(:[1-9]\d*)?\}}", tag), tag

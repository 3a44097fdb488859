"""routes.yaml's `coalesce:` (README "Delivery semantics"): off unless
written, its defaults, and one-line errors at the place for values out of
bounds; the http plugin refuses a header it sets on coalesced requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import ConfigError
from router.config.loading import load
from router.plugin.sinks import Delivery
from tests.support.routes import write_yaml
from tests.unit.test_config import GOOD


def settings(tmp_path: Path, extra: str) -> object:
    return load(str(write_yaml(tmp_path, GOOD + extra)), env={}).destinations["chatbot"].settings


def test_off_unless_written_and_its_defaults(tmp_path: Path) -> None:
    assert settings(tmp_path, "").coalesce is None  # type: ignore[attr-defined]
    on = settings(tmp_path, "    coalesce: {window: 500ms}\n").coalesce  # type: ignore[attr-defined]
    assert (on.window, on.max_messages) == (0.5, 10)
    on = settings(tmp_path, "    coalesce: {}\n").coalesce  # type: ignore[attr-defined]
    assert (on.window, on.max_messages) == (1.0, 10)


@pytest.mark.parametrize(
    ("value", "where", "words"),
    [
        ("{window: 0}", "coalesce.window", "more than 0"),
        ("{window: 2m}", "coalesce.window", "at most 1m"),
        ("{max_messages: 1}", "coalesce.max_messages", "between 2 and 1000"),
        ("{max_messages: 1001}", "coalesce.max_messages", "between 2 and 1000"),
        ("{window: soon}", "coalesce.window", "invalid duration"),
        ("{size: 3}", "coalesce", "size"),
    ],
)
def test_values_out_of_bounds_are_one_line_at_their_place(
    tmp_path: Path, value: str, where: str, words: str
) -> None:
    path = write_yaml(tmp_path, GOOD + f"    coalesce: {value}\n")
    with pytest.raises(ConfigError) as info:
        load(str(path), env={})
    message = str(info.value)
    assert message.splitlines() == [message]
    assert f":{GOOD.count(chr(10)) + 1}: " in message, message
    assert f"destinations.chatbot.{where}" in message and words in message, message


def test_the_http_plugin_refuses_to_set_the_coalesced_header(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, GOOD + "    headers: {X-Router-Coalesced: '2'}\n")
    with pytest.raises(ConfigError, match="the router sets it"):
        load(str(path), env={})


def test_a_coalesced_requests_id_stands_for_its_messages() -> None:
    def one(message_id: str) -> Delivery:
        return Delivery(message_id, b"{}", "k", 1, 0, "d")

    single = Delivery("a", b"[{}]", "k", 1, 0, "d", coalesced=(one("a"),))
    assert single.request_id == "a"
    group = Delivery("a", b"[{},{}]", "k", 1, 0, "d", coalesced=(one("a"), one("b")))
    other = Delivery("a", b"[{},{}]", "k", 1, 0, "d", coalesced=(one("a"), one("c")))
    assert group.request_id.startswith("a+2.")
    assert group.request_id != other.request_id
    assert group.request_id == Delivery(**{**_fields(group), "attempt": 2}).request_id


def _fields(d: Delivery) -> dict[str, object]:
    return {name: getattr(d, name) for name in d.__dataclass_fields__}

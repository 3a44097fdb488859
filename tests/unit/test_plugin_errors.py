"""Broken plugins registered in-process, and failures as one line."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from router.config.plugins import available, plugin_manager
from router.ops.failures import one_line
from router.plugin.hookspecs import hookimpl


@hookimpl
def _returns_a_dict() -> dict[str, str]:
    return {"name": "sms"}


@pytest.fixture()
def wrong_return() -> Iterator[None]:
    plugin = SimpleNamespace(router_sink_types=_returns_a_dict)
    plugin_manager().register(plugin, name="wrong-return")
    try:
        yield
    finally:
        plugin_manager().unregister(name="wrong-return")


def test_a_hook_returning_the_wrong_thing_is_broken_and_the_rest_load(wrong_return: None) -> None:
    found = available(plugin_manager())
    assert {"http", "chatbot"} <= set(found.sink_types)
    assert [str(b) for b in found.broken] == [
        "plugin 'wrong-return' (registered in-process): its router_sink_types hook returned "
        "{'name': 'sms'}, not a list of SinkType"
    ]


def test_an_exception_group_is_the_exceptions_raised_in_it_on_one_line() -> None:
    group = ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [ValueError("token\nmissing"), ExceptionGroup("inner", [KeyError("k"), KeyError("k")])],
    )
    assert one_line(group) == "ValueError: token missing; KeyError: 'k'"
    assert one_line(RuntimeError()) == "RuntimeError"

"""The start log shows a destination's host[:port] and nothing else of its
URL: no user part, path or query (any may hold a token)."""

from __future__ import annotations

import pytest

from router.runtime.start_log import target_host


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@api.example.com/bot123:AAH/send?token=x#frag", "api.example.com"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1:8080"),
        ("http://[::1]:9000/x", "[::1]:9000"),
        ("https://HOST.example", "host.example"),
        ("http://host:99999/x", None),  # no port of it is a port
        ("not a url", None),
        ("unix:///run/bot.sock", None),
        (None, None),
    ],
)
def test_only_the_host_and_port_are_shown(url: object, shown: str | None) -> None:
    assert target_host(url) == shown

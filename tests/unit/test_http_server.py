"""router.http.server.protocol_class refuses what it cannot build. (The
protocol against slow and broken clients: tests/integration/test_slow_clients.py.)"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from router.http.server import _HeadWithBody, protocol_class


def test_protocol_class_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        protocol_class(1, 10, "h2")
    with pytest.raises(ValueError):
        protocol_class(0, 10)
    with pytest.raises(ValueError):
        protocol_class(1, 0)
    if importlib.util.find_spec("httptools") is None:
        with pytest.raises(ValueError, match="httptools"):
            protocol_class(1, 10, "httptools")


class _Recording(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_an_answers_head_goes_out_with_its_body_in_one_write() -> None:
    async def main() -> list[bytes]:
        transport = _Recording()
        one = _HeadWithBody(transport, asyncio.get_running_loop())
        one.hold_next()
        one.write(b"HEAD\r\n\r\n")
        assert transport.writes == []
        one.write(b"body")
        one.write(b"more")  # a later chunk goes as it comes
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(main()) == [b"HEAD\r\n\r\nbody", b"more"]


def test_a_held_head_goes_out_on_the_loops_next_turn_or_before_a_close() -> None:
    async def main() -> tuple[list[bytes], list[bytes], bool]:
        loop = asyncio.get_running_loop()
        streamed, closed = _Recording(), _Recording()
        one = _HeadWithBody(streamed, loop)
        one.hold_next()
        one.write(b"HEAD")  # a streamed answer: its first chunk comes later
        await asyncio.sleep(0)
        other = _HeadWithBody(closed, loop)
        other.hold_next()
        other.write(b"HEAD")
        other.close()
        return streamed.writes, closed.writes, closed.closed

    assert asyncio.run(main()) == ([b"HEAD"], [b"HEAD"], True)

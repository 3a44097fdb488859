"""A TCP proxy on loopback that a test controls: put it between the router
and a broker, then cut every connection through it, or refuse new ones for
a while, to play a broker restart without touching the machine's broker
(other sessions and CI runs share it).

It runs its own event loop in a background thread, so sync tests (the
router in a thread) and async tests use it alike::

    with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        proxy.down()   # every connection cut, new ones refused
        ...            # wait until the router saw the failure
        proxy.up()     # accepted again

`pause()` stops reading what clients send (their writes back up, as to
a slow network) until `resume()`; `hold(pattern)` keeps back, from the
next `pattern` a client sends, every byte it sends after (the broker
never reads them) until the connection is cut: a message the network
lost after the client wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.support.servers import free_port

T = TypeVar("T")

_CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:`port` (a free one unless given) to
    `upstream_host`:`upstream_port`, byte for byte, both ways."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.accepted = 0  # connections accepted since start, cut ones included
        self.cuts = 0  # connections closed by cut() or down()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        # Each live connection: its two transports (client side, broker side).
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._hold: bytes | None = None  # see hold()
        self.held = 0  # bytes kept back since hold()
        self._reading: asyncio.Event | None = None  # clear while paused

    # -- control (from the test's thread) ---------------------------------

    def start(self) -> TcpProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        self.up()
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def up(self) -> None:
        """Listen (again): new connections are forwarded."""
        self._call(self._listen())

    def down(self) -> int:
        """Stop listening (a connection is refused) and cut every live
        connection, as a broker going down does. Returns how many were cut."""
        return self._call(self._down())

    def cut(self) -> int:
        """Cut every live connection (a reset on both sides), still
        listening: as a broker restarting at once. Returns how many."""
        return self._call(self._cut())

    def hold(self, pattern: bytes) -> None:
        """From the next occurrence of `pattern` in what a client sends (in
        one read: loopback writes are not split), forward nothing more of
        that connection's bytes to the broker: they are counted in `held`
        and dropped when the connection is cut. The broker's bytes still
        flow back. Until cut() or down()."""
        self._hold = pattern
        self.held = 0

    def pause(self) -> None:
        """Read nothing more from the clients until resume(): what they
        send backs up in their sockets (and their write buffers)."""
        self._call(self._set_reading(False))

    def resume(self) -> None:
        self._call(self._set_reading(True))

    @property
    def live(self) -> int:
        """Connections open through the proxy now."""
        return len(self._pairs)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- in the proxy's loop -----------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the proxy is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _set_reading(self, on: bool) -> None:
        if self._reading is None:
            self._reading = asyncio.Event()
        if on:
            self._reading.set()
        else:
            self._reading.clear()

    async def _listen(self) -> None:
        if self._reading is None:
            await self._set_reading(True)
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _down(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        return await self._cut()

    async def _cut(self) -> int:
        pairs = list(self._pairs)
        self._pairs.clear()
        for client, upstream in pairs:
            # abort(): no orderly FIN, the unsent bytes dropped: a crash.
            client.transport.abort()
            upstream.transport.abort()
        self.cuts += len(pairs)
        self._hold = None
        await asyncio.sleep(0)  # let the pumps see their ends
        return len(pairs)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before down()
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, outbound=True), self._pump(up_reader, writer)
            )
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outbound: bool = False
    ) -> None:
        holding = False
        try:
            while True:
                if outbound and self._reading is not None:
                    await self._reading.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if outbound and not holding and self._hold is not None:
                    at = data.find(self._hold)
                    if at >= 0:
                        holding = True
                        self.held += len(data) - at
                        data = data[:at]
                elif holding:
                    self.held += len(data)
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            # One side ended: end the other (a half-close is not something
            # the brokers' clients expect here).
            writer.transport.abort()

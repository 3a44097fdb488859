"""The lean HTTP/1.1 client under the built-in sinks (router.plugin.h1, the
`h1` delivery transport): the answers a real server may give that the
common cases in test_delivery_transport.py do not reach (chunked and
close-delimited bodies, interim answers, `Connection: close`, a server
that closes an idle connection or talks out of turn, garbage), TLS, and
the same delivery on uvloop, which the router runs by default. Every
server here is a raw asyncio server on loopback writing bytes by hand."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from router.plugin import h1
from tests.support.tls import self_signed_certificate

pytestmark = pytest.mark.anyio

# What the server does with one connection: read requests, write answers.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and Content-Length body; b"" at the end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def server(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[int]]]:
    """A server on 127.0.0.1 running `handler` per connection: its port,
    and the peer port of every connection it accepted."""
    connections: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        connections.append(writer.get_extra_info("peername")[1])
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield srv.sockets[0].getsockname()[1], connections
    finally:
        srv.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def answering(*answers: bytes, close_after: bool = False) -> Handler:
    """A handler answering each request on a connection with the next of
    `answers` (the last one repeated), then closing if `close_after`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while await read_request(reader):
            writer.write(answers[min(n, len(answers) - 1)])
            await writer.drain()
            n += 1
            if close_after:
                return

    return handle


@contextlib.asynccontextmanager
async def pool(
    max_connections: int = 4,
    expiry: float = 5.0,
    tls: Callable[[], ssl.SSLContext] = ssl.create_default_context,
) -> AsyncIterator[h1.Pool]:
    p = h1.Pool(max_connections, expiry, tls)
    try:
        yield p
    finally:
        await p.aclose()


async def post(p: h1.Pool, port: int, body: bytes = b"{}", scheme: str = "http", limit: int = 100):
    target = p.target("POST", httpx.URL(f"{scheme}://localhost:{port}/hook?x=1"))
    return await target.send(body, {"content-type": "application/json"}, 5.0, limit)


async def test_the_request_goes_out_as_http_1_1_with_host_and_length() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    async with server(handle) as (port, _), pool() as p:
        assert await post(p, port, b'{"a":1}') == (200, [(b"Content-Length", b"2")], b"ok")
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?x=1 HTTP/1.1"
    assert f"host: localhost:{port}".encode() in lines
    assert b"content-type: application/json" in lines
    assert b"content-length: 7" in lines
    assert body == b'{"a":1}'


async def test_credentials_in_the_url_go_as_basic_auth() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            seen.append(request)
            writer.write(OK)
            await writer.drain()

    async with server(handle) as (port, _), pool() as p:
        url = httpx.URL(f"http://bot:s%40cret@127.0.0.1:{port}/hook")
        await p.target("POST", url).send(b"", {}, 5.0, 10)
        await p.target("POST", url).send(b"", {"authorization": "Bearer own"}, 5.0, 10)
    first, second = (request.split(b"\r\n") for request in seen)
    assert b"authorization: Basic Ym90OnNAY3JldA==" in first  # bot:s@cret
    assert f"host: 127.0.0.1:{port}".encode() in first
    assert b"authorization: Bearer own" in second
    assert not any(line.startswith(b"authorization: Basic") for line in second)


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    async with server(answering(chunked)) as (port, connections), pool() as p:
        assert (await post(p, port))[2] == b"abcdefg"
        assert (await post(p, port))[2] == b"abcdefg"
    assert len(connections) == 1


async def test_a_body_ending_with_the_connection_is_read_to_the_close() -> None:
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    async with server(answering(until_close, close_after=True)) as (port, connections), pool() as p:
        assert (await post(p, port))[:3:2] == (200, b"all of it")
        assert (await post(p, port))[2] == b"all of it"
    assert len(connections) == 2  # such a connection cannot be reused


async def test_an_interim_answer_is_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with server(answering(interim)) as (port, _), pool() as p:
        assert await post(p, port) == (200, [(b"Content-Length", b"2")], b"ok")


async def test_connection_close_in_the_answer_opens_a_new_one_next_time() -> None:
    closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"
    async with server(answering(closing)) as (port, connections), pool() as p:
        assert (await post(p, port))[:3:2] == (503, b"busy")
        assert (await post(p, port))[:3:2] == (503, b"busy")
    assert len(connections) == 2


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    """A server closing a kept-alive connection between deliveries (its own
    keep-alive timeout) costs nothing: the next delivery opens a new one."""
    async with server(answering(OK, close_after=True)) as (port, connections), pool() as p:
        # Content-Length and no `Connection: close`: the client keeps it...
        assert (await post(p, port))[0] == 200
        for _ in range(500):  # ...and the server's close lands meanwhile
            if not any(p._idle.values()):
                break
            await asyncio.sleep(0.01)
        assert (await post(p, port))[0] == 200
    assert len(connections) == 2


async def test_an_idle_connection_past_the_expiry_is_not_reused() -> None:
    async with server(answering(OK)) as (port, connections), pool(expiry=0.05) as p:
        await post(p, port)
        await asyncio.sleep(0.1)
        await post(p, port)
    assert len(connections) == 2


async def test_bytes_after_the_answer_drop_the_connection() -> None:
    talkative = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    async with server(answering(talkative)) as (port, connections), pool() as p:
        assert (await post(p, port))[2] == b"ok"
        await asyncio.sleep(0.05)
        # Not read as the next delivery's answer: a new connection.
        assert (await post(p, port))[2] == b"ok"
    assert len(connections) == 2


async def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async with server(answering(b"SSH-2.0-OpenSSH_9.2\r\n")) as (port, _), pool() as p:
        with pytest.raises(httpx.RemoteProtocolError, match="invalid HTTP answer"):
            await post(p, port)


async def test_a_switch_of_protocols_is_a_protocol_error() -> None:
    """(httptools raises it apart from its parse errors: uncaught, it
    surfaced as `ReadError: 77` with a traceback in the log.)"""
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with server(answering(upgrade)) as (port, _), pool() as p:
        with pytest.raises(httpx.RemoteProtocolError, match="switched protocols"):
            await post(p, port)


async def test_a_long_answer_is_cut_at_the_limit_and_its_connection_closed() -> None:
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000
    async with server(answering(long)) as (port, connections), pool() as p:
        status, _, body = await post(p, port, limit=10)
        assert (status, body) == (200, b"z" * 10)
        assert (await post(p, port, limit=10))[2] == b"z" * 10
    assert len(connections) == 2


async def test_a_cancelled_exchange_does_not_leave_its_connection_for_the_next() -> None:
    """An attempt cancelled mid-answer (the worker stopping): the late answer
    must not be taken for the next delivery's."""
    first = asyncio.Event()

    async def slow_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            if not first.is_set():
                first.set()
                await asyncio.sleep(0.2)
                writer.write(b"HTTP/1.1 500 Late\r\nContent-Length: 4\r\n\r\nlate")
            else:
                writer.write(OK)
            await writer.drain()

    async with server(slow_then_ok) as (port, connections), pool() as p:
        attempt = asyncio.create_task(post(p, port))
        await first.wait()
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        assert (await post(p, port))[:3:2] == (200, b"ok")
    assert len(connections) == 2


async def test_the_cap_holds_and_a_waiter_gets_a_connection_back() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async with server(slow) as (port, connections), pool(max_connections=2) as p:
        results = await asyncio.gather(*(post(p, port) for _ in range(6)))
    assert [r[0] for r in results] == [200] * 6
    assert len(connections) == 2


async def test_waiting_for_a_connection_times_out_as_a_pool_timeout() -> None:
    holding = asyncio.Event()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        holding.set()
        await asyncio.sleep(10)

    async with server(never) as (port, _), pool(max_connections=1) as p:
        target = p.target("POST", httpx.URL(f"http://127.0.0.1:{port}/"))
        held = asyncio.create_task(target.send(b"", {}, 5.0, 10))
        await holding.wait()  # (not a sleep: on a busy machine it may not have connected yet)
        with pytest.raises(httpx.PoolTimeout):
            await target.send(b"", {}, 0.1, 10)
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)


async def test_a_header_with_a_newline_is_refused_before_anything_is_sent() -> None:
    async with server(answering(OK)) as (port, connections), pool() as p:
        target = p.target("POST", httpx.URL(f"http://127.0.0.1:{port}/"))
        with pytest.raises(httpx.LocalProtocolError):
            await target.send(b"", {"x-token": "secret\n"}, 5.0, 10)
    assert connections == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_https_verifies_the_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    def trusting() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cert))

    async with server(answering(OK), tls=served) as (port, connections):
        async with pool(tls=trusting) as p:
            assert await post(p, port, scheme="https") == (200, [(b"Content-Length", b"2")], b"ok")
            assert (await post(p, port, scheme="https"))[0] == 200
        assert len(connections) == 1
        async with pool() as p:  # the default trust store does not know it
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(p, port, scheme="https")


def test_deliveries_on_uvloop() -> None:
    """The router's default loop: its transports are not asyncio's."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")

    async def main() -> list[tuple[int, bytes]]:
        async with server(answering(OK)) as (port, connections), pool() as p:
            got = [await post(p, port) for _ in range(3)]
            got += await asyncio.gather(*(post(p, port) for _ in range(8)))
            assert len(connections) <= 4
            return [(status, body) for status, _, body in got]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [(200, b"ok")] * 11


async def test_an_idle_connection_being_closed_is_not_taken() -> None:
    """The server closes an idle connection (its keep-alive timeout): once
    the client has seen the close, before the transport reports it lost, a
    delivery must not go out on it (it would fail for nothing)."""
    async with server(answering(OK, close_after=True)) as (port, connections), pool() as p:
        assert (await post(p, port))[0] == 200
        idle = next(iter(p._idle.values()))[0]
        assert idle.transport is not None
        for _ in range(100_000):  # one loop turn at a time: the window is one turn
            if idle.transport.is_closing():
                break
            await asyncio.sleep(0)
        assert not idle.closed  # connection_lost has not run yet
        assert (await post(p, port))[0] == 200
    assert len(connections) == 2


async def test_a_waiter_cancelled_as_it_is_woken_passes_the_connection_on() -> None:
    """A waiter woken for a connection coming back but cancelled before it
    runs (its attempt timed out at that moment): the next waiter gets the
    connection instead of waiting out its own timeout."""
    async with server(answering(OK)) as (port, _), pool(max_connections=1) as p:
        target = p.target("POST", httpx.URL(f"http://127.0.0.1:{port}/"))
        loop = asyncio.get_running_loop()
        held = await p.acquire(target.origin, loop.time() + 5)
        await held.exchange(target._request(b"", {}), 10, loop.time() + 5)  # kept alive
        first = asyncio.create_task(target.send(b"", {}, 5.0, 10))
        second = asyncio.create_task(target.send(b"", {}, 1.0, 10))
        await asyncio.sleep(0.01)  # both wait for the one connection
        p.release(held)  # wakes the first...
        first.cancel()  # ...which is cancelled before it runs
        assert (await second)[0] == 200
        await asyncio.gather(first, return_exceptions=True)


async def test_a_timed_out_exchange_frees_its_slot_though_the_server_reads_nothing() -> None:
    """A server that stops reading: the request still unsent when the attempt
    times out must not hold the connection's slot until the server goes."""
    calls = 0

    async def stuck_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)  # reads nothing
        await answering(OK)(reader, writer)

    async with server(stuck_then_ok) as (port, _), pool(max_connections=1) as p:
        target = p.target("POST", httpx.URL(f"http://127.0.0.1:{port}/"))
        with pytest.raises(httpx.ReadTimeout):
            await target.send(b"x" * (64 << 20), {}, 0.3, 10)
        assert (await target.send(b"{}", {}, 2.0, 10))[0] == 200

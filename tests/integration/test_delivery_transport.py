"""The HTTP client a destination delivers with (router.plugin.client), under
both transports (ROUTER_DELIVERY_TRANSPORT=aiohttp, the default, and httpx's
own): how failures are reported, no cookies between deliveries, keep-alive
and idle expiry, the httpx API a plugin uses, the cap on an answer read by
the built-in http sink, the cap on connections and the check of an https
destination's certificate. Every destination here is a raw asyncio server
on loopback, so the tests see the connections."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

import router.plugin.client
from router.config import Destination, DestinationSettings, Duration
from router.config.plugins import OpenSink, open_sink, plugin_manager, sink_types
from router.config.settings import DeliveryTransport
from router.plugin import tls
from router.plugin.client import delivery_client
from router.plugin.http_sink import MAX_ANSWER_BYTES, HttpOptions, HttpSink
from router.plugin.sinks import Delivery, DeliveryFailed, SinkType
from tests.support.servers import free_port
from tests.support.tls import self_signed_certificate

# Marked here, not only by the root conftest's late marking: anyio's plugin
# rebuilds a late-marked async test without its own parameters.
pytestmark = pytest.mark.anyio

TRANSPORTS = pytest.mark.parametrize("transport", ["h1", "aiohttp", "httpx"])


# -- a raw HTTP/1.1 server that shows its connections ---------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; a repeated header joined by ", "
    body: bytes
    peer_port: int  # which connection it came on

    def json(self) -> Any:
        return json.loads(self.body)


async def read_request(reader: asyncio.StreamReader, peer_port: int) -> Request | None:
    """One request from the connection (a Content-Length or chunked body);
    None when the client closed it before a request began."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body, peer_port)


def response(
    status: int = 200,
    body: bytes = b'{"status": "ok"}',
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    head = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}"]
    if not any(k.lower() == "content-type" for k, _ in headers or []):
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# How the server answers one request: write to the connection, and say
# whether the connection stays open for the next request.
Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


async def answer_ok(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(response())
    await writer.drain()
    return True


@dataclass
class RawServer:
    """asyncio.start_server on 127.0.0.1: records every request and every
    connection; `answer` decides what each request gets."""

    answer: Answer = answer_ok
    requests: list[Request] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)  # peer ports, in accept order
    closed: list[int] = field(default_factory=list)  # peer ports the client hung up
    open_now: int = 0
    max_open: int = 0
    port: int = 0
    tls: ssl.SSLContext | None = None  # an https server
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        peer_port = writer.get_extra_info("peername")[1]
        self.connections.append(peer_port)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                request = await read_request(reader, peer_port)
                if request is None:
                    self.closed.append(peer_port)
                    return
                self.requests.append(request)
                if not await self.answer(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed.append(peer_port)
        except asyncio.CancelledError:
            return  # the test is over (__aexit__); asyncio 3.11 would log a cancelled handler
        finally:
            self.open_now -= 1
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), 10)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within {timeout:g}s")


# -- the built-in http sink, opened as the router opens it ------------------------


@contextlib.asynccontextmanager
async def http_sink(
    url: str,
    transport: DeliveryTransport,
    timeout: float = 10.0,
    max_in_flight: int = 4,
    sink_type: SinkType | None = None,
) -> AsyncIterator[OpenSink]:
    """The `http` destination's sink (or another built on HttpOptions) with
    the client open_sink lends it."""
    destination = Destination(
        name="bot",
        settings=DestinationSettings(
            plugin="http", timeout=Duration(timeout), max_in_flight=max_in_flight
        ),
        sink_type=sink_type or sink_types(plugin_manager())["http"],
        options=HttpOptions(url=url),
    )
    opened = await open_sink(destination, transport)
    try:
        yield opened
    finally:
        await opened.aclose()


def delivery(n: int = 1) -> Delivery:
    return Delivery(
        id=f"msg-{n}",
        body=json.dumps({"wa_id": "34600000000", "mensaje": f"m{n}"}).encode(),
        key="34600000000",
        attempt=1,
        received_at_ms=0,
        destination="bot",
    )


async def failure(opened: OpenSink) -> str:
    with pytest.raises(DeliveryFailed) as failed:
        await opened.sink.deliver(delivery())
    return failed.value.reason


# -- 1-3. failures are reported as what they were -------------------------------


@TRANSPORTS
async def test_refused_connection_is_a_connect_error(transport: DeliveryTransport) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with http_sink(url, transport, timeout=5) as opened:
        reason = await failure(opened)
    assert reason.startswith("ConnectError: "), reason
    assert "timed out" not in reason
    assert "Timeout" not in reason


@TRANSPORTS
async def test_refused_https_connection_names_no_tls_context_object(
    transport: DeliveryTransport,
) -> None:
    """The error text (logged, kept in the dead letter) is the same in every
    process: aiohttp's names its TLS as "ssl:default", never the router's
    context object at its address."""
    url = f"https://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with http_sink(url, transport, timeout=5) as opened:
        reason = await failure(opened)
    client = delivery_client(4, 5.0, transport)
    try:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post(url, json={})
    finally:
        await client.aclose()
    assert reason.startswith("ConnectError: "), reason
    texts = [reason, str(refused.value)]
    for text in texts:
        assert "SSLContext object at" not in text, text
    # Through aiohttp: the built-in sink under aiohttp, a plugin's request
    # under both h1 and aiohttp.
    through_aiohttp = {"h1": texts[1:], "aiohttp": texts, "httpx": []}[transport]
    for text in through_aiohttp:
        assert "ssl:default" in text, text


@TRANSPORTS
async def test_server_closing_without_answer_is_a_protocol_error(
    transport: DeliveryTransport,
) -> None:
    async def hang_up(request: Request, writer: asyncio.StreamWriter) -> bool:
        return False  # the request was read; the connection closes unanswered

    async with RawServer(hang_up) as server, http_sink(server.url, transport, 5) as opened:
        reason = await failure(opened)
    assert reason.startswith(("RemoteProtocolError: ", "ReadError: ")), reason
    assert "timed out" not in reason
    assert "Timeout" not in reason
    assert len(server.requests) == 1  # it did arrive, once (a POST is not retried)


@TRANSPORTS
async def test_server_that_never_answers_times_out(transport: DeliveryTransport) -> None:
    async def never(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()  # until the test's server closes
        return False

    async with RawServer(never) as server, http_sink(server.url, transport, 0.5) as opened:
        reason = await failure(opened)
    assert reason == "timed out after 0.5s"
    assert len(server.requests) == 1


# -- 4. no cookies between deliveries -------------------------------------------


@TRANSPORTS
async def test_cookies_are_not_carried_between_deliveries(transport: DeliveryTransport) -> None:
    async def set_cookie(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(headers=[("Set-Cookie", "session=abc123; Path=/")]))
        await writer.drain()
        return True

    async with RawServer(set_cookie) as server, http_sink(server.url, transport) as opened:
        await opened.sink.deliver(delivery(1))
        await opened.sink.deliver(delivery(2))
        # A plugin using the client directly gets no cookie either.
        await opened.http.post(server.url, json={"plugin": True})
    assert len(server.requests) == 3
    # Each message stands alone (router/plugin/client.py's docstring): a
    # cookie a destination set must not reach it again.
    assert [r.headers.get("cookie") for r in server.requests] == [None, None, None]


# -- 5. keep-alive, and idle connections dropped --------------------------------


@TRANSPORTS
async def test_sequential_deliveries_reuse_one_connection(transport: DeliveryTransport) -> None:
    async with RawServer() as server, http_sink(server.url, transport) as opened:
        for n in range(3):
            await opened.sink.deliver(delivery(n))
    assert len(server.requests) == 3
    assert len(server.connections) == 1
    assert {r.peer_port for r in server.requests} == {server.connections[0]}


@TRANSPORTS
async def test_idle_connection_is_dropped_after_the_expiry(
    transport: DeliveryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # delivery_client reads the constant when the client is made.
    monkeypatch.setattr(router.plugin.client, "IDLE_CONNECTION_EXPIRY", 0.3)
    async with RawServer() as server, http_sink(server.url, transport) as opened:
        await opened.sink.deliver(delivery(1))
        await asyncio.sleep(1.5)  # well past 0.3 s idle; the server keeps it open
        await opened.sink.deliver(delivery(2))
        first, second = (r.peer_port for r in server.requests)
        assert first != second
        assert server.connections == [first, second]
        # The client closed the expired connection (not left it open).
        await wait_for(lambda: first in server.closed, "the idle connection closed")
        assert second not in server.closed


# -- 6. the client as a plugin uses it -------------------------------------------


@TRANSPORTS
async def test_plugin_post_json_gets_the_whole_answer(transport: DeliveryTransport) -> None:
    big = {"items": ["x" * 100] * 2000}  # ~200 KB: more than the http sink keeps
    answer_body = json.dumps(big).encode()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            response(
                201,
                answer_body,
                headers=[("X-Custom", "yes"), ("X-Multi", "a"), ("X-Multi", "b")],
            )
        )
        await writer.drain()
        return True

    client = delivery_client(4, 10.0, transport)
    try:
        async with RawServer(answer) as server:
            sent = {"wa_id": "346", "mensaje": "hola ñ", "n": [1, 2, 3]}
            got = await client.post(server.url, json=sent, headers={"X-Token": "t"})
    finally:
        await client.aclose()
    assert got.status_code == 201
    assert got.content == answer_body
    assert got.json() == big
    assert got.headers["x-custom"] == "yes"
    assert got.headers.get_list("x-multi") == ["a", "b"]
    assert got.headers["content-type"] == "application/json"
    (request,) = server.requests
    assert request.method == "POST"
    assert request.target == "/hook"
    assert request.json() == sent
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "t"


@TRANSPORTS
async def test_plugin_streamed_request_body_arrives_complete(
    transport: DeliveryTransport,
) -> None:
    chunks = [bytes([i]) * (10_000 + i) for i in range(50)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0)

    async def echo_size(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(body=json.dumps({"received": len(request.body)}).encode()))
        await writer.drain()
        return True

    client = delivery_client(4, 10.0, transport)
    try:
        async with RawServer(echo_size) as server:
            got = await client.post(server.url, content=body())
    finally:
        await client.aclose()
    assert got.status_code == 200
    assert got.json() == {"received": sum(map(len, chunks))}
    (request,) = server.requests
    assert request.body == b"".join(chunks)


@TRANSPORTS
async def test_plugin_gets_a_compressed_answer_decoded(transport: DeliveryTransport) -> None:
    answer_json = {"status": "ok", "text": "y" * 5000}

    async def gzipped(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = gzip.compress(json.dumps(answer_json).encode())
        writer.write(response(body=body, headers=[("Content-Encoding", "gzip")]))
        await writer.drain()
        return True

    client = delivery_client(4, 10.0, transport)
    try:
        async with RawServer(gzipped) as server:
            got = await client.post(server.url, json={})
    finally:
        await client.aclose()
    assert got.json() == answer_json


@TRANSPORTS
async def test_plugin_gets_a_non_2xx_status_not_an_exception(
    transport: DeliveryTransport,
) -> None:
    async def unavailable(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(503, b'{"error": "busy"}', headers=[("Retry-After", "7")]))
        await writer.drain()
        return True

    client = delivery_client(4, 10.0, transport)
    try:
        async with RawServer(unavailable) as server:
            got = await client.post(server.url, json={"a": 1})
            # and the connection stays usable for the next request
            again = await client.post(server.url, json={"a": 2})
    finally:
        await client.aclose()
    assert got.status_code == 503
    assert got.is_error
    assert got.json() == {"error": "busy"}
    assert got.headers["retry-after"] == "7"
    assert again.status_code == 503
    assert len(server.connections) == 1


@TRANSPORTS
async def test_http_sink_reports_a_non_2xx_answer(transport: DeliveryTransport) -> None:
    async def unavailable(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(503, b"busy, come back", headers=[("Retry-After", "7")]))
        await writer.drain()
        return True

    async with RawServer(unavailable) as server, http_sink(server.url, transport) as opened:
        with pytest.raises(DeliveryFailed) as failed:
            await opened.sink.deliver(delivery())
    assert failed.value.reason == "HTTP 503: busy, come back"
    assert failed.value.retry_after == 7.0
    (request,) = server.requests
    assert request.headers["idempotency-key"] == "msg-1"
    assert request.headers["x-router-attempt"] == "1"
    assert request.body == delivery().body


# -- 7. a huge answer is not read ------------------------------------------------

HUGE = 64 * 1024 * 1024  # far beyond what loopback socket buffers hold


class JudgingSink(HttpSink):
    """An HTTP plugin's sink (as the chatbot plugin's): remembers the answers
    its check() was given."""

    judged: ClassVar[list[httpx.Response]] = []

    def check(self, response: httpx.Response) -> None:
        self.judged.append(response)
        super().check(response)


@TRANSPORTS
async def test_huge_answer_is_read_only_up_to_the_cap(transport: DeliveryTransport) -> None:
    written: dict[int, int] = {}  # peer port -> body bytes the server got out

    async def huge(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.json()["mensaje"] != "m1":
            writer.write(response())
            await writer.drain()
            return True
        head = response(body=b"")  # Content-Length: 0 replaced below
        head = head.replace(b"Content-Length: 0", f"Content-Length: {HUGE}".encode())
        writer.write(head)
        chunk = b"z" * (256 * 1024)
        sent = 0
        written[request.peer_port] = 0
        while sent < HUGE:  # until the client hangs up (a ConnectionError)
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            written[request.peer_port] = sent
        return True  # everything went out: the client read it all

    JudgingSink.judged.clear()
    judging = SinkType("judging", JudgingSink, HttpOptions)
    async with (
        RawServer(huge) as server,
        http_sink(server.url, transport, sink_type=judging) as opened,
    ):
        await opened.sink.deliver(delivery(1))  # a 200: acknowledged from the prefix
        await opened.sink.deliver(delivery(2))
        first, second = (r.peer_port for r in server.requests)
        # The client hung up on the huge answer rather than reading it ...
        await wait_for(lambda: first in server.closed, "the client closed the connection")
    assert written[first] < HUGE
    judged = JudgingSink.judged[0]
    assert judged.status_code == 200
    assert judged.content == b"z" * MAX_ANSWER_BYTES  # the prefix, no more
    # (its Content-Length is the prefix's, not the wire's 64 MiB)
    assert judged.headers["content-length"] == str(MAX_ANSWER_BYTES)
    # ... so the next delivery came on a new connection.
    assert first != second
    assert server.connections == [first, second]


# -- 8. at most max_in_flight connections ----------------------------------------


@TRANSPORTS
async def test_connections_are_capped_at_max_in_flight(transport: DeliveryTransport) -> None:
    cap = 3
    in_flight = 0
    max_in_flight = 0
    full = asyncio.Event()

    async def held(request: Request, writer: asyncio.StreamWriter) -> bool:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        if in_flight >= cap:
            full.set()
        try:
            # Held until `cap` requests are in flight at once (so the cap is
            # reached whatever the machine's speed), then ~0.2 s more.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(full.wait(), 5)
            await asyncio.sleep(0.2)
        finally:
            in_flight -= 1
        writer.write(response())
        await writer.drain()
        return True

    async with (
        RawServer(held) as server,
        http_sink(server.url, transport, timeout=30, max_in_flight=cap) as opened,
    ):
        results = await asyncio.gather(
            *(opened.sink.deliver(delivery(n)) for n in range(10)), return_exceptions=True
        )
    # Every delivery succeeded (none raised), each with the answer's status.
    assert [getattr(r, "status", r) for r in results] == [200] * 10
    assert sorted(r.json()["mensaje"] for r in server.requests) == sorted(
        f"m{n}" for n in range(10)
    )
    assert server.max_open == cap
    assert max_in_flight == cap
    assert len(server.connections) == cap  # and they were reused


# -- 9. the proxy variables, as httpx honours them -------------------------------


@TRANSPORTS
async def test_http_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(
    transport: DeliveryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The destination's host does not resolve: only a proxy can reach it.
    destination = "http://bot.invalid/hook"
    async with RawServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with http_sink(destination, transport) as opened:
            await opened.sink.deliver(delivery(1))
        assert [r.target for r in proxy.requests] == [destination]  # absolute form: a proxy
        assert proxy.requests[0].json()["mensaje"] == "m1"
        monkeypatch.setenv("NO_PROXY", "bot.invalid")
        async with http_sink(destination, transport) as opened:
            reason = await failure(opened)
        assert reason.startswith("ConnectError"), reason  # went direct, and failed
        assert len(proxy.requests) == 1


# -- 10. the same request on the wire under both transports ----------------------


@TRANSPORTS
async def test_a_plugin_body_without_a_content_type_is_sent_without_one(
    transport: DeliveryTransport,
) -> None:
    async with RawServer() as server:
        client = delivery_client(4, 10.0, transport)
        try:
            await client.post(server.url, content=b"{}")
        finally:
            await client.aclose()
    assert "content-type" not in server.requests[0].headers  # as httpx sends it


@TRANSPORTS
async def test_a_header_value_with_a_newline_fails_the_attempt_cleanly(
    transport: DeliveryTransport,
) -> None:
    """A secret read from a file with its trailing newline: a failed
    attempt naming the problem, not a plugin crash with a traceback.
    (routes.yaml refuses such a header value at load, HttpOptions; a
    plugin's own headers may still carry one: set after validation here.)"""
    async with RawServer() as server:
        options = HttpOptions(url=server.url, headers={"authorization": "tok"})
        options.headers["authorization"] = "tok\n"
        destination = Destination(
            name="bot",
            settings=DestinationSettings(plugin="http", timeout=Duration(5.0), max_in_flight=1),
            sink_type=sink_types(plugin_manager())["http"],
            options=options,
        )
        opened = await open_sink(destination, transport)
        try:
            reason = await failure(opened)
        finally:
            await opened.aclose()
    assert reason.startswith("LocalProtocolError"), reason
    assert server.requests == []  # nothing went out


# -- 11. TLS: the destination's certificate is verified -------------------------


@TRANSPORTS
async def test_an_https_destination_with_an_unknown_certificate_is_refused(
    transport: DeliveryTransport, tmp_path: Path
) -> None:
    """No CA the router trusts vouches for a self-signed certificate: the
    built-in sink's delivery and a plugin's own request both fail to
    connect, and nothing is sent."""
    cert, key = self_signed_certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    async with RawServer(tls=served) as server:
        async with http_sink(server.url, transport, timeout=5) as opened:
            reason = await failure(opened)
        client = delivery_client(4, 5.0, transport)
        try:
            with pytest.raises(httpx.ConnectError) as refused:
                await client.post(server.url, json={})
        finally:
            await client.aclose()
    assert reason.startswith("ConnectError: "), reason
    for text in (reason, str(refused.value)):
        assert "CERTIFICATE_VERIFY_FAILED" in text, text
    assert server.requests == []


@TRANSPORTS
async def test_an_https_destination_whose_ca_ssl_cert_file_names_is_trusted(
    transport: DeliveryTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE naming the server's self-signed certificate: the
    built-in sink's delivery and a plugin's own request both reach it, so
    every transport checks certificates against the router's CAs."""
    cert, key = self_signed_certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    # The context is built once per process: anew, with this variable, and
    # anew after it (other tests must not trust this certificate).
    tls.ssl_context.cache_clear()
    try:
        async with RawServer(tls=served) as server:
            async with http_sink(server.url, transport, timeout=5) as opened:
                await opened.sink.deliver(delivery(1))
            client = delivery_client(4, 5.0, transport)
            try:
                answer = await client.post(server.url, json={"n": 2})
            finally:
                await client.aclose()
    finally:
        tls.ssl_context.cache_clear()
    assert answer.status_code == 200
    assert [r.json().get("mensaje", r.json().get("n")) for r in server.requests] == ["m1", 2]


@TRANSPORTS
async def test_clients_share_the_process_tls_context(
    transport: DeliveryTransport, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every destination's client, httpx's own transport included, uses
    the TLS context the process built once: once a first destination has
    delivered over https, opening more loads no CA bundle again (httpx's
    default is a context per client, about 20 ms each), and their https
    deliveries still verify against it."""
    cert, key = self_signed_certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls.ssl_context.cache_clear()
    built: list[object] = []
    make = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs.get("cafile"))
        return make(*args, **kwargs)

    async def post(n: int) -> int:
        client = delivery_client(4, 5.0, transport)
        try:
            return (await client.post(server.url, json={"n": n})).status_code
        finally:
            await client.aclose()

    try:
        async with RawServer(tls=served) as server:
            # The first destination: the context built, the transport's
            # modules imported (aiohttp builds contexts of its own then).
            first = await post(0)
            monkeypatch.setattr(ssl, "create_default_context", counted)
            more = [await post(n) for n in (1, 2, 3)]
    finally:
        tls.ssl_context.cache_clear()
    assert [first, *more] == [200, 200, 200, 200]
    assert built == []

"""Slow and broken clients against a real uvicorn server using
router.http.server.protocol_class: header deadline, pending-connection cap,
JSON bodies for uvicorn's own 400s.

Each test talks raw TCP to a real server on loopback. Timings have wide
margins (the deadline is 1-2 s, the tests allow several seconds): they show
that the server cuts connections at all, not how precisely.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from router.http.server import protocol_class
from tests.support.servers import ServerThread

# The httptools variant is tested too wherever httptools is installed
# (uvicorn[standard]); it is not a dependency today.
HTTP_IMPLS = ["h11"] + (["httptools"] if importlib.util.find_spec("httptools") else [])


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, answers {"status": "ok", "received": <bytes>};
    /sleep takes 1.5 s to answer."""
    assert scope["type"] == "http"
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/sleep":
        await asyncio.sleep(1.5)
    body = json.dumps({"status": "ok", "received": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_server(header_timeout: float, max_pending: int, http: str) -> ServerThread:
    """The test app under uvicorn with the hardened protocol class."""
    return ServerThread(app, http=protocol_class(header_timeout, max_pending, http)).start()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_reply(data: bytes) -> Reply:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return Reply(int(status_line.split()[1]), headers, body[:length])


def read_reply(sock: socket.socket, timeout: float = 10) -> Reply:
    """One complete response (by content-length) from a blocking socket."""
    sock.settimeout(timeout)
    data = b""
    while True:
        _, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= int(parse_reply(data).headers.get("content-length", 0)):
            return parse_reply(data)
        chunk = sock.recv(65536)
        if not chunk:
            return parse_reply(data)
        data += chunk


def wait_closed(sock: socket.socket, timeout: float) -> bytes | None:
    """Everything the server sends until it closes; None if still open
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def trickle(
    socks: list[socket.socket],
    data: bytes,
    interval: float,
    limit: float,
    on_tick: Callable[[float], None] = lambda elapsed: None,
    enough: int | None = None,
) -> tuple[dict[int, bytes], float]:
    """Send `data` one byte per `interval` on every socket, until the server
    has closed them all (or `enough` of them) or `limit` seconds passed.
    Returns what each closed socket (by index) received before the close,
    and the time taken."""
    enough = len(socks) if enough is None else enough
    for s in socks:
        s.setblocking(False)
    received = [b""] * len(socks)
    closed: dict[int, bytes] = {}
    start = time.monotonic()
    position = 0
    while len(closed) < enough and time.monotonic() - start < limit:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            # Read first: an answer that came must be seen before a later
            # byte of ours can make the server's kernel reset the socket.
            try:
                while chunk := s.recv(65536):
                    received[i] += chunk
                closed[i] = received[i]  # recv returned b"": end of stream
                continue
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed[i] = received[i]
                continue
            if position < len(data):
                try:
                    s.send(data[position : position + 1])
                except OSError:
                    pass  # closed by the server: the next read sees it
        position += 1
        on_tick(time.monotonic() - start)
        time.sleep(interval)
    return closed, time.monotonic() - start


@dataclass
class Net:
    start: Callable[..., ServerThread]
    connect: Callable[[int], socket.socket]


@pytest.fixture(params=HTTP_IMPLS)
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    """Start guarded servers and open client sockets; all are closed after
    the test (sockets first, so the servers stop at once)."""
    servers: list[ServerThread] = []
    sockets: list[socket.socket] = []

    def start(header_timeout: float, max_pending: int = 1000) -> ServerThread:
        servers.append(guarded_server(header_timeout, max_pending, request.param))
        return servers[-1]

    def connect(port: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(s)
        return s

    try:
        yield Net(start, connect)
    finally:
        for s in sockets:
            s.close()
        for server in servers:
            server.stop()


def request(path: str = "/", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def get_ok(net: Net, port: int) -> bool:
    """A normal request on a fresh connection gets 200."""
    s = net.connect(port)
    try:
        s.sendall(request(extra="Connection: close\r\n"))
        return read_reply(s).status == 200
    except (OSError, AssertionError):  # refused or cut: no complete answer
        return False
    finally:
        s.close()


def assert_json_error(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.headers.get("content-type") == "application/json", reply.headers
    assert reply.headers.get("connection") == "close", reply.headers
    body = reply.json()
    assert body["status"] == "error"
    assert isinstance(body["error"], str) and body["error"]
    return dict(body)


def test_slow_headers_get_408_and_the_server_keeps_serving(net: Net) -> None:
    server = net.start(header_timeout=1)
    attackers = [net.connect(server.port) for _ in range(50)]
    normal: list[bool] = []

    def during_attack(elapsed: float) -> None:
        # All 50 attackers are connected and trickling, none cut yet.
        if not normal and elapsed > 0.3:
            normal.append(get_ok(net, server.port))

    partial = b"GET /slow HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 40
    closed, elapsed = trickle(attackers, partial, 0.3, limit=12, on_tick=during_attack)

    assert normal == [True], "a normal request during the attack did not get 200"
    assert len(closed) == 50, f"{50 - len(closed)} slow connections still open after {elapsed:.1f}s"
    assert elapsed < 6, f"slow connections were cut only after {elapsed:.1f}s"
    for data in closed.values():
        body = assert_json_error(parse_reply(data), 408)
        assert body["error"] == "request headers not received within 1s"
    assert get_ok(net, server.port)


def test_silent_connection_is_closed_without_an_answer(net: Net) -> None:
    server = net.start(header_timeout=1)
    s = net.connect(server.port)
    assert wait_closed(s, timeout=8) == b""


def test_keep_alive_deadline_restarts_after_each_response(net: Net) -> None:
    server = net.start(header_timeout=2)
    s = net.connect(server.port)
    # Five prompt requests on one connection, 0.7 s apart: together longer
    # than the deadline, each well within it counted from the last answer.
    for n in range(5):
        if n:
            time.sleep(0.7)
        s.sendall(request())
        reply = read_reply(s)
        assert reply.status == 200, f"request {n + 1}: {reply}"
        assert reply.json() == {"status": "ok", "received": 0}
    # The next request's headers trickle in: cut with a 408.
    closed, _ = trickle([s], request() + b"X-Slow: yes", 0.3, limit=12)
    assert 0 in closed, "a keep-alive connection trickling its next request stayed open"
    body = assert_json_error(parse_reply(closed[0]), 408)
    assert body["error"] == "request headers not received within 2s"


def test_slow_body_and_slow_app_do_not_trip_the_header_deadline(net: Net) -> None:
    server = net.start(header_timeout=1)
    idle = net.connect(server.port)  # shows the deadline is in force
    s = net.connect(server.port)
    s.sendall(request("/echo", "POST", "Content-Length: 10\r\n"))
    for _ in range(10):  # the body takes 2 s, twice the header deadline
        time.sleep(0.2)
        s.sendall(b"x")
    reply = read_reply(s)
    assert reply.status == 200, reply
    assert reply.json() == {"status": "ok", "received": 10}
    # Same connection: an app that takes 1.5 s to answer is fine too.
    s.sendall(request("/sleep"))
    reply = read_reply(s)
    assert reply.status == 200, reply
    # Meanwhile the idle connection was cut.
    assert wait_closed(idle, timeout=5) == b""


def test_the_cap_lets_the_longest_waiting_connections_go(net: Net) -> None:
    server = net.start(header_timeout=30, max_pending=5)
    idle = [net.connect(server.port) for _ in range(5)]
    time.sleep(0.3)  # all five accepted, in order, before anyone else comes
    # A real client is served at once although the cap is full of idle
    # connections; it made room by letting the longest-waiting one go.
    assert get_ok(net, server.port)
    late = [net.connect(server.port) for _ in range(3)]  # three more go
    answers = {i: data for i, s in enumerate(idle) if (data := wait_closed(s, 1)) is not None}
    assert sorted(answers) == [0, 1, 2]
    for data in answers.values():  # each learns why, not a bare reset
        body = assert_json_error(parse_reply(data), 503)
        assert body["error"] == "too many connections waiting to send request headers"
        assert parse_reply(data).headers["retry-after"] == "1"
    assert all(wait_closed(s, 0.2) is None for s in [*idle[3:], *late]), "a newer one was closed"


def test_a_malformed_request_pipelined_behind_a_good_one_gets_a_json_400(net: Net) -> None:
    server = net.start(header_timeout=5)
    s = net.connect(server.port)
    s.sendall(request() + b"GARBAGE\r\n\r\n")
    data = wait_closed(s, timeout=5)
    assert data is not None, "the server kept the connection open"
    first, _, rest = data.partition(b"}")  # the 200's JSON body ends the first answer
    assert parse_reply(first + b"}").status == 200
    body = assert_json_error(parse_reply(rest), 400)
    assert body["error"] == "Invalid HTTP request received."


def test_malformed_request_gets_a_json_400(net: Net) -> None:
    server = net.start(header_timeout=5)
    s = net.connect(server.port)
    s.sendall(b"GARBAGE\r\n\r\n")
    data = wait_closed(s, timeout=5)
    assert data is not None, "the server kept a malformed request's connection open"
    body = assert_json_error(parse_reply(data), 400)
    assert body["error"] == "Invalid HTTP request received."


def test_a_malformed_body_is_answered_at_once_not_at_the_body_deadline(net: Net) -> None:
    """A bad chunk in the current request's own body is that request's
    error: a JSON 400 now, not a 408 once the body deadline passes (the
    handler would wait for a body that cannot come)."""
    server = net.start(header_timeout=30)
    s = net.connect(server.port)
    s.sendall(request("/echo", "POST", "Transfer-Encoding: chunked\r\n") + b'5\r\n{"a":\r\nZZZ\r\n')
    data = wait_closed(s, timeout=10)  # well under the 30 s deadline
    assert data is not None, "the server waited for the rest of a malformed body"
    body = assert_json_error(parse_reply(data), 400)
    assert body["error"] == "Invalid HTTP request received."

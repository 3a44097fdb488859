"""The chatbot the router delivers to: a real HTTP server (an ASGI app under
uvicorn in a thread) that records every request and answers as the test
tells it; and what the tests check against what it acknowledged."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.support.servers import ServerThread


async def read_request(
    scope: Any, receive: Any, send: Any
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The JSON body (an empty body is {}) and the lower-cased headers of the
    HTTP request an ASGI app was called for. None when there is nothing to
    answer: a lifespan scope (completed here), another non-HTTP scope, or a
    client that hung up before the body was read (the router went away
    mid-request: nothing was delivered)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return None
    if scope["type"] != "http":
        return None
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    return json.loads(b"".join(chunks) or b"{}"), headers


async def send_json(
    send: Any, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """Answer an ASGI request: `body` as JSON (a str is sent as it is)."""
    data = body if isinstance(body, str) else json.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data.encode()})


@dataclass
class Received:
    body: Any  # a JSON object; an array of them for a coalesced request
    headers: dict[str, str]
    at: float
    status: int  # what the bot answered
    answer_body: dict[str, Any] | str = ""


@dataclass
class Answer:
    status: int = 200
    body: dict[str, Any] | str = field(default_factory=lambda: {"status": "ok"})
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Bot:
    """The chatbot the router delivers to: records every request, answers
    as told. `decide(message, n)` picks the answer for the n-th request
    (default 200 {"status": "ok"}); `latency` adds a random delay."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.decide: Callable[[dict[str, Any], int], Answer] = lambda m, n: Answer()
        self.latency: tuple[float, float] = (0.0, 0.0)
        self.in_flight: dict[str, int] = {}
        self.max_in_flight_per_key = 0
        self.max_in_flight = 0
        self._active = 0
        self.lock = threading.Lock()
        self.server: ServerThread | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        message, headers = request
        # A coalesced request is an array of messages: its first one's key.
        first = message[0] if isinstance(message, list) and message else message
        key = str(first.get("wa_id")) if isinstance(first, dict) else ""
        with self.lock:
            n = len(self.received)
            answer = self.decide(message, n)
            self.received.append(
                Received(message, headers, time.monotonic(), answer.status, answer.body)
            )
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.max_in_flight_per_key = max(self.max_in_flight_per_key, self.in_flight[key])
            self._active += 1
            self.max_in_flight = max(self.max_in_flight, self._active)
        try:
            delay = answer.delay + random.uniform(*self.latency)
            if delay:
                await asyncio.sleep(delay)
        finally:
            with self.lock:
                self.in_flight[key] -= 1
                self._active -= 1
        await send_json(send, answer.status, answer.body, answer.headers)

    # -- what the tests look at --

    def acknowledged(self) -> list[Received]:
        """Requests the bot answered with success."""
        return [r for r in list(self.received) if 200 <= r.status < 300 and _ok_body(r)]

    def acked_messages(self, key: str | None = None) -> list[str]:
        return [
            r.body["mensaje"]
            for r in self.acknowledged()
            if key is None or r.body.get("wa_id") == key
        ]

    def attempts_of(self, mensaje: str) -> list[Received]:
        return [r for r in list(self.received) if r.body.get("mensaje") == mensaje]

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/bot"


_Served = TypeVar("_Served", "Bot", "EchoingBot")


@contextlib.contextmanager
def _serving(b: _Served) -> Iterator[_Served]:
    """`b` served on loopback for the block, stopped after it."""
    b.server = ServerThread(b).start()
    try:
        yield b
    finally:
        b.server.stop()


def serving_bot() -> contextlib.AbstractContextManager[Bot]:
    """A Bot served on loopback for the block, stopped after it."""
    return _serving(Bot())


def _ok_body(r: Received) -> bool:
    """A 2xx whose body says {"status": "error"} is the bot refusing."""
    return not (isinstance(r.answer_body, dict) and r.answer_body.get("status") == "error")


def check_order(sent: dict[str, list[str]], acked: list[Received]) -> tuple[int, int]:
    """Per key, the acknowledged sequence has no gaps and never goes back.

    Returns (lost, duplicates). Raises AssertionError on a reordering."""
    acked_by_key: dict[str, list[str]] = {}
    for r in acked:
        acked_by_key.setdefault(r.body["wa_id"], []).append(r.body["mensaje"])
    lost = duplicates = 0
    for key, messages in sent.items():
        got = acked_by_key.get(key, [])
        position = {m: i for i, m in enumerate(messages)}
        highest = -1
        for m in got:
            i = position[m]
            if i <= highest:
                duplicates += 1
                assert i == highest, f"key {key}: {m} acknowledged after a later message"
                continue
            assert i == highest + 1, f"key {key}: gap before {m} (last was #{highest})"
            highest = i
        lost += len(messages) - 1 - highest
    return lost, duplicates


class EchoingBot:
    """A destination that refuses every request with a 500 whose JSON body
    echoes the request's Authorization header, written as the message's
    `mensaje` field says: `json` (the value in a JSON string), `url`
    (percent-encoded, as a form would), `base64`, `base64url`; as many
    services do in their error answers. `echoed` holds what it echoed, as
    written and inside the JSON body: what must never reach a text the
    router shows."""

    FORMS = ("json", "url", "base64", "base64url")

    def __init__(self) -> None:
        self.echoed: set[str] = set()
        self.server: ServerThread | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        message, headers = request
        value = headers.get("authorization", "")
        form = message.get("mensaje")
        echoed = {
            "url": urllib.parse.urlencode({"authorization": value}),
            "base64": base64.b64encode(value.encode()).decode(),
            "base64url": base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
        }.get(str(form), value)
        self.echoed |= {echoed, json.dumps(echoed)[1:-1]}
        await send_json(send, 500, {"error": "denied", "got": echoed})

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/bot"


def serving_echoing_bot() -> contextlib.AbstractContextManager[EchoingBot]:
    """An EchoingBot served on loopback for the block."""
    return _serving(EchoingBot())

"""Real servers for the tests: a controllable HTTP bot, the router, helpers.

Everything here runs real code on loopback: uvicorn serving ASGI apps in
background threads, the router's own create_app, a real Redis-compatible
server. Nothing of the router is mocked.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Serve an ASGI app with uvicorn in a thread; stop() closes the port."""

    def __init__(self, app: Any, port: int | None = None, http: Any = "auto") -> None:
        self.app = app
        self.port = port or free_port()
        self.http = http  # uvicorn's protocol: a name, or a class (router.http_server)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> ServerThread:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="auto",
            timeout_graceful_shutdown=30,
            http=self.http,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(40)
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Received:
    body: dict[str, Any]
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
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks = []
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the router went away mid-request: nothing was delivered
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        message = json.loads(b"".join(chunks) or b"{}")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = str(message.get("wa_id"))
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
        body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    *((k.encode(), v.encode()) for k, v in answer.headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

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


def _ok_body(r: Received) -> bool:
    """A 2xx whose body says {"status": "error"} is the bot refusing."""
    return not (isinstance(r.answer_body, dict) and r.answer_body.get("status") == "error")


def write_routes(
    path: Path,
    bot_url: str | None,
    *,
    destination: str = "chatbot",
    route: dict[str, Any] | None = None,
    **dest: Any,
) -> Path:
    """A routes.yaml with one route, /v1/store_message, to one destination
    (plugin chatbot at `bot_url` unless `dest` says otherwise). `route` adds
    route settings; a `dest` value of None removes that setting."""
    settings: dict[str, Any] = {
        "plugin": "chatbot",
        "url": bot_url,
        "ordering_key": "wa_id",
        "max_in_flight": 16,
        "timeout": "2s",
        "lease": "5s",
        "retry": {"initial": "50ms", "factor": 2, "max_delay": "400ms", "jitter": 0.1},
    }
    for k, v in dest.items():
        settings[k] = v
    settings = {k: v for k, v in settings.items() if v is not None}
    config = {
        "routes": [
            {
                "path": "/v1/store_message",
                "destinations": [destination],
                "fields": {"mensaje": "string", "wa_id": "string"},
                **(route or {}),
            }
        ],
        "destinations": {destination: settings},
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


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

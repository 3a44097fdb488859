"""What bench/outage.py's scenarios share: a bot that fails on demand (for
everyone while `down`, always for its `poison` conversations), one `router
serve` process in front of it with the circuit breaker on or off, posting
paced over time, and the figures read off the bot's record and the router's
log."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from context import Context
from procs import DESTINATION, HOST, free_port, router_argv, wait_http

# The router's one line per transition of the breaker (router/delivery/health.py), at
# LOG_LEVEL=warning. An operator's `router retry` reopens it without a line.
DOWN_LINE = f"destination {DESTINATION} is down"
UP_LINE = f"destination {DESTINATION} is up again"

Message = tuple[str, str]  # (wa_id, mensaje)


@dataclass
class Attempt:
    at: float  # time.monotonic() when the bot answered
    wa_id: str
    mensaje: str
    status: int


@dataclass
class Bot:
    """Answers 500 while `down` and always to a `poison` conversation's
    messages, else 200; records every request."""

    down: bool = False
    poison: frozenset[str] = frozenset()
    seen: list[Attempt] = field(default_factory=list)
    first_ok: dict[Message, float] = field(default_factory=dict)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        wa_id, mensaje = body["wa_id"], body["mensaje"]
        status = 500 if self.down or wa_id in self.poison else 200
        now = time.monotonic()
        self.seen.append(Attempt(now, wa_id, mensaje, status))
        if status == 500:
            return web.json_response({"error": "down"}, status=500)
        self.first_ok.setdefault((wa_id, mensaje), now)
        return web.json_response({"status": "ok"})

    def attempts(self, wa_ids: Iterable[str], until: float = math.inf) -> list[Attempt]:
        keys = set(wa_ids)
        return [a for a in list(self.seen) if a.wa_id in keys and a.at <= until]

    @contextlib.contextmanager
    def serving(self) -> Iterator[Bot]:
        """Serve on a free port in a thread of its own until the block ends."""
        self.port = free_port()
        started = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/bot", self.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, HOST, self.port).start()
            started.set()
            await stop.wait()
            await runner.cleanup()

        thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()


class Router:
    """One `router serve` (LOG_LEVEL=warning, its output in the run's logs)
    delivering route /v1/store_message to the bot, breaker on or off."""

    def __init__(self, ctx: Context, bot: Bot, breaker: bool, name: str) -> None:
        self.ctx, self.name = ctx, name
        routes = ctx.tmp / f"routes-{name}.yaml"
        routes.write_text(
            f"""\
routes:
  - path: /v1/store_message
    destinations: [{DESTINATION}]
destinations:
  {DESTINATION}:
    plugin: chatbot
    url: http://{HOST}:{bot.port}/bot
    ordering_key: wa_id
    circuit_breaker: {{enabled: {str(breaker).lower()}}}
"""
        )
        self.env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        self.log: Path = ctx.procs.logs / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.posted: dict[Message, float] = {}  # when the POST answered

    def __enter__(self) -> Router:
        argv = router_argv("serve", "--port", str(self.port))
        self.proc = self.ctx.procs.start(self.name, argv, self.env)
        wait_http(self.port, "/healthz", self.proc)
        self.client = httpx.Client(base_url=f"http://{HOST}:{self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.proc is not None:
            self.ctx.procs.stop(self.proc)

    def post(self, wa_id: str, mensaje: str) -> None:
        r = self.client.post("/v1/store_message", json={"mensaje": mensaje, "wa_id": wa_id})
        self.posted[(wa_id, mensaje)] = time.monotonic()
        if r.status_code != 200:
            self.ctx.problems.append(f"{self.name}: a post answered {r.status_code}")

    def post_spread(
        self, messages: list[Message], seconds: float, between: Callable[[], None]
    ) -> None:
        """Post `messages` evenly over `seconds`, calling `between` while
        waiting for the next one's turn."""
        start = time.monotonic()
        for i, (wa_id, mensaje) in enumerate(messages):
            due = start + i * seconds / len(messages)
            while (now := time.monotonic()) < due:
                between()
                time.sleep(min(0.01, due - now))
            self.post(wa_id, mensaje)

    def log_lines(self, text: str) -> int:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return 0
        return sum(1 for line in lines if text in line)

    def transitions(self) -> tuple[int, int]:
        """Breaker state changes the router logged: (down, up again)."""
        return self.log_lines(DOWN_LINE), self.log_lines(UP_LINE)

    def logged_down(self) -> bool:
        """Down by its own log: more 'down' lines than 'up again' ones."""
        return self.log_lines(DOWN_LINE) > self.log_lines(UP_LINE)

    def start_cli(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """`router ARGS...` with the serving process's Redis and routes,
        its output in the run's logs as NAME.log."""
        return self.ctx.procs.start(name, router_argv(*args), self.env)


def wait_until(done: Callable[[], bool], deadline: float, between: Callable[[], None]) -> bool:
    """Until `done()` or `deadline`, calling `between` on every look."""
    while time.monotonic() < deadline:
        between()
        if done():
            return True
        time.sleep(0.02)
    return done()


def delivered(bot: Bot, messages: Iterable[Message]) -> Callable[[], bool]:
    """Whether the bot has acknowledged every one of `messages` (for wait_until)."""
    wanted = set(messages)
    return lambda: wanted <= bot.first_ok.keys()


def in_order_once(bot: Bot, conversations: Iterable[str], messages: int) -> bool:
    """Every conversation's acknowledged messages are the first of its
    `messages` (0, 1, ...), in order, none twice."""
    acked: dict[str, list[str]] = {c: [] for c in conversations}
    for a in list(bot.seen):
        if a.status == 200 and a.wa_id in acked:
            acked[a.wa_id].append(a.mensaje)
    expected = [str(n) for n in range(messages)]
    return all(got == expected[: len(got)] for got in acked.values())


def percentile(values: list[float], p: float) -> float:
    """Nearest rank; math.inf (a message never delivered) sorts last."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p * len(ranked)) - 1)]

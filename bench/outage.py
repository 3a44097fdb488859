"""Outage: the bot answers 500 to everyone for a while, then recovers. What
the destination's circuit breaker (docs/destination-health.md) changes,
beside the same router with it off, in one run.

    .venv/bin/python bench/outage.py [--conversations 200] [--outage 30] [--rounds 1]

Per run: a bot (aiohttp, in this process) that answers 500 while down and
200 otherwise, recording every request; `router serve` (one process, the
chatbot plugin with the default retry policy and max_in_flight, LOG_LEVEL=
warning) against the bench's Redis; the bot goes down, C conversations post
two messages each, the outage lasts T seconds from the first post, then the
bot is up. Reported: the failed attempts the bot received during the
outage, the seconds from the bot's recovery to its last acknowledgement,
and whether every conversation's messages arrived once each, in order. The
goal (issue 11): with the breaker on, <= 100 failed attempts during a 30 s
outage of 200 conversations, all delivered <= 5 s after the recovery.

Not a speed figure, so not a bench/run.py part: the two runs differ in
behaviour by an order of magnitude, not in per cent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from aiohttp import web
from alone import run_alone
from context import Context
from procs import HOST, free_port, router_argv, say, wait_http
from redisdb import flush


@dataclass
class Bot:
    """Answers 500 while `down`; records (time, wa_id, mensaje, status)."""

    down: bool = True
    seen: list[tuple[float, str, str, int]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = 500 if self.down else 200
        self.seen.append((time.monotonic(), body["wa_id"], body["mensaje"], status))
        if status == 500:
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"status": "ok"})

    def serve(self) -> Callable[[], None]:
        """Start serving in a thread; returns what stops it."""
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

        def stopper() -> None:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()

        return stopper


@dataclass
class Outcome:
    breaker: bool
    failed_during: int
    recovery_seconds: float
    in_order: bool
    delivered: int
    expected: int


class OutagePart:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.outcomes: list[Outcome] = []

    def run(self) -> None:
        args = self.ctx.args
        for rnd in range(args.rounds):
            for breaker in (True, False):
                flush(self.ctx.redis_url)
                self.outcomes.append(self._one(breaker, rnd))

    def _one(self, breaker: bool, rnd: int) -> Outcome:
        ctx, args = self.ctx, self.ctx.args
        bot = Bot()
        stop_bot = bot.serve()
        routes = ctx.tmp / f"routes-outage-{breaker}.yaml"
        routes.write_text(
            f"""\
routes:
  - path: /v1/store_message
    destinations: [chatbot]
destinations:
  chatbot:
    plugin: chatbot
    url: http://{HOST}:{bot.port}/bot
    ordering_key: wa_id
    circuit_breaker: {{enabled: {str(breaker).lower()}}}
"""
        )
        port = free_port()
        env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        name = f"outage-{'on' if breaker else 'off'}-r{rnd}"
        proc = ctx.procs.start(name, router_argv("serve", "--port", str(port)), env)
        try:
            wait_http(port, "/healthz", proc)
            began = time.monotonic()
            conversations = [f"4491{i:05d}" for i in range(args.conversations)]
            with httpx.Client(base_url=f"http://{HOST}:{port}") as client:
                for n in range(2):
                    for c in conversations:
                        r = client.post("/v1/store_message", json={"mensaje": f"{n}", "wa_id": c})
                        if r.status_code != 200:
                            ctx.problems.append(f"outage: a post answered {r.status_code}")
            time.sleep(max(0.0, began + args.outage - time.monotonic()))
            bot.down = False
            up_at = time.monotonic()
            expected = 2 * len(conversations)
            deadline = up_at + 120
            while time.monotonic() < deadline:
                if sum(1 for s in list(bot.seen) if s[3] == 200) >= expected:
                    break
                time.sleep(0.05)
        finally:
            ctx.procs.stop(proc)
            stop_bot()
        seen = list(bot.seen)
        ok = [s for s in seen if s[3] == 200]
        by_key: dict[str, list[str]] = {}
        for _, key, mensaje, _ in ok:
            by_key.setdefault(key, []).append(mensaje)
        in_order = all(v == ["0", "1"] for v in by_key.values()) and len(by_key) == len(
            conversations
        )
        last_ok = max((s[0] for s in ok), default=up_at)
        outcome = Outcome(
            breaker=breaker,
            failed_during=sum(1 for s in seen if s[3] == 500),
            recovery_seconds=last_ok - up_at,
            in_order=in_order,
            delivered=len(ok),
            expected=expected,
        )
        if not in_order or outcome.delivered != expected:
            ctx.problems.append(
                f"outage ({'breaker on' if breaker else 'breaker off'}): "
                f"{outcome.delivered} of {expected} acknowledged, in order: {in_order}"
            )
        say(f"outage: {outcome}")
        return outcome

    def report_lines(self) -> list[str]:
        args = self.ctx.args
        lines = [
            f"## Outage: {args.conversations} conversations x 2 messages, bot down "
            f"{args.outage:g}s",
            "",
            "| circuit breaker | failed attempts during the outage | last delivery after "
            "recovery (s) | delivered once each, in order |",
            "| --- | ---: | ---: | --- |",
        ]
        for o in self.outcomes:
            lines.append(
                f"| {'on (defaults)' if o.breaker else 'off'} | {o.failed_during:,} | "
                f"{o.recovery_seconds:.1f} | {'yes' if o.in_order else 'NO'} "
                f"({o.delivered}/{o.expected}) |"
            )
        return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the bot is down")
    parser.add_argument("--rounds", type=int, default=1)
    return run_alone("outage", parser.parse_args(), OutagePart)


if __name__ == "__main__":
    sys.exit(main())

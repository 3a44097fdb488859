"""Delivery to a message broker (bench/broker_nats.py, bench/broker_mqtt.py):
N messages stored, then `router worker --burst` publishing them through the
broker plugin, beside a plain client of the same library publishing the
same messages (same bodies, headers, and the same ack: each publish waits
for the broker's acknowledgement, at most `in_flight` at once). The rate is
taken at a subscriber of the broker (first to last arrival), the same clock
for both; the ratio router / plain client is judged against a goal of 0.5.

A broker that is not reachable on 127.0.0.1 is not run: the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from context import Context
from fmt import rate, x2
from preload import preload
from procs import REPO, router_argv, say, write_routes
from redisdb import flush

NAN = float("nan")
GOAL = 0.5


@dataclass(frozen=True)
class BrokerCase:
    keys: int
    in_flight: int
    variant: str = ""  # e.g. "JetStream" / "core"

    @property
    def label(self) -> str:
        text = f"{self.keys:,} wa_id{'s' * (self.keys > 1)}, {self.in_flight} in flight"
        return f"{self.variant}, {text}" if self.variant else text


def message_body(i: int, keys: int) -> tuple[str, bytes]:
    """Message i as bench/delivery.py's preload stores it: (wa_id, body)."""
    wa_id = str(i % keys)
    return wa_id, f'{{"mensaje":"m{i}","wa_id":"{wa_id}"}}'.encode()


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


class Arrivals:
    """A subscriber on its own event loop (a thread): counts the messages it
    receives and keeps the first and last arrival times."""

    def __init__(self) -> None:
        self.count = 0
        self.first = NAN
        self.last = NAN
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Future[None] | None = None

    def arrived(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now

    def reset(self) -> None:
        self.count, self.first, self.last = 0, NAN, NAN

    def listen(
        self, subscribe: Callable[[Callable[[], None], asyncio.Event], Awaitable[None]]
    ) -> None:
        """Run `subscribe(on_message, subscribed)` until stop(); returns once
        it set `subscribed`."""
        ready = threading.Event()

        async def run() -> None:
            subscribed = asyncio.Event()
            self._stop = asyncio.Event()
            task = asyncio.ensure_future(subscribe(self.arrived, subscribed))
            await subscribed.wait()
            ready.set()
            await self._stop.wait()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

        self._task = asyncio.run_coroutine_threadsafe(run(), self._loop)  # type: ignore[assignment]
        if not ready.wait(30):
            raise RuntimeError("the subscriber did not subscribe within 30 s")

    def wait(self, n: int, timeout: float, proc_done: Callable[[], bool]) -> bool:
        """Until n arrived (True), or timeout, or the publisher exited and
        nothing more arrives for 2 s (False)."""
        deadline = time.monotonic() + timeout
        quiet_since = None
        seen = -1
        while time.monotonic() < deadline:
            if self.count >= n:
                return True
            if self.count != seen:
                seen, quiet_since = self.count, time.monotonic()
            elif proc_done() and quiet_since and time.monotonic() - quiet_since > 2:
                return False
            time.sleep(0.02)
        return False

    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if self.count > 1 and span > 0 else NAN

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._task is not None:
            try:
                self._task.result(10)  # type: ignore[union-attr]
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class BrokerPart:
    """One broker's part of the bench; broker_nats.py / broker_mqtt.py fill in
    how to reach it, subscribe, and run the plain client."""

    ctx: Context
    name: str = ""  # "NATS", "MQTT"
    host: str = "127.0.0.1"
    port: int = 0
    cases: tuple[BrokerCase, ...] = ()
    skipped: str | None = None
    by_case: dict[BrokerCase, dict[str, float]] = field(default_factory=dict)

    # -- what a broker module provides ---------------------------------------

    def settings(self, case: BrokerCase, prefix: str) -> str:
        raise NotImplementedError

    async def subscribe(
        self, prefix: str, on_message: Callable[[], None], subscribed: asyncio.Event
    ) -> None:
        raise NotImplementedError

    def client_argv(self, case: BrokerCase, prefix: str, n: int) -> list[str]:
        raise NotImplementedError

    def setup(self, case: BrokerCase, prefix: str) -> None:
        """Before a run (e.g. create the JetStream stream)."""

    def teardown(self, case: BrokerCase, prefix: str) -> None:
        """After a run (e.g. delete the stream)."""

    # -- the runs --------------------------------------------------------------

    def run(self) -> None:
        if not reachable(self.host, self.port):
            self.skipped = f"{self.name} not reachable at {self.host}:{self.port}"
            say(f"{self.name} part skipped: {self.skipped}")
            return
        runs: dict[BrokerCase, list[dict[str, float]]] = {c: [] for c in self.cases}
        for _ in range(self.ctx.args.delivery_rounds):
            for case in self.cases:
                client = self.run_one(case, "client")
                router = self.run_one(case, "router")
                runs[case].append({"client": client, "router": router, "ratio": router / client})
        for case, rs in runs.items():
            self.by_case[case] = {f: statistics.median(r[f] for r in rs) for f in rs[0]}

    def run_one(self, case: BrokerCase, who: str) -> float:
        ctx = self.ctx
        n = ctx.args.n
        prefix = f"bench{int(time.time() * 1000) % 10**9}{who}"
        self.setup(case, prefix)
        arrivals = Arrivals()
        try:
            arrivals.listen(lambda on, ready: self.subscribe(prefix, on, ready))
            tag = f"{self.name.lower()}-{who}-{case.keys}-{case.in_flight}{case.variant}"
            if who == "router":
                flush(ctx.redis_url)
                preload(ctx.redis_url, n, case.keys)
                routes = write_routes(
                    ctx.tmp / f"routes-{tag}.yaml",
                    "",
                    case.in_flight,
                    plugin=self.settings(case, prefix),
                )
                env = {
                    "REDIS_URL": ctx.redis_url,
                    "ROUTES_FILE": str(routes),
                    "LOG_LEVEL": "warning",
                }
                proc = ctx.procs.start(tag, router_argv("worker", "--burst"), env)
            else:
                proc = ctx.procs.start(tag, self.client_argv(case, prefix, n), cwd=REPO)
            complete = arrivals.wait(n, ctx.args.timeout, lambda: proc.poll() is not None)
            ctx.procs.stop(proc)
            what = f"{self.name} {who} {case.label}"
            if not complete:
                ctx.problems.append(
                    f"{what}: the subscriber counted {arrivals.count}, expected {n}"
                )
            say(f"{what}: {arrivals.rate():,.0f} msg/s at the subscriber, {arrivals.count}/{n}")
            return arrivals.rate()
        finally:
            arrivals.stop()
            self.teardown(case, prefix)

    # -- the report ------------------------------------------------------------

    def report_lines(self) -> list[str]:
        n = self.ctx.args.n
        out = [f"### Delivery to {self.name}: {n} messages, msg/s at a subscriber", ""]
        if self.skipped:
            return [*out, f"Not run: {self.skipped}.", ""]
        out += [
            "| case | router | plain client | router / plain client | goal | met? |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for case, d in self.by_case.items():
            value = d["ratio"]
            met = (
                "-" if value != value else ("**met**" if round(value, 2) >= GOAL else "**missed**")
            )
            out.append(
                f"| {case.label} | {rate(d['router'])} | {rate(d['client'])} "
                f"| **{x2(value)}** | ≥ {GOAL:g} | {met} |"
            )
        out += ["", self.note(), ""]
        return out

    def note(self) -> str:
        return ""


def run_alone_main(name: str, make: Callable[[Context], BrokerPart], doc: str) -> int:
    """`python bench/broker_X.py -n 200`: this part alone (bench/alone.py)."""
    from alone import run_alone

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=5000, help="messages per run (default 5000)")
    p.add_argument("--rounds", type=int, default=1, help="runs per case (median)")
    p.add_argument("--timeout", type=float, default=180, help="seconds any run may take")
    args = p.parse_args()
    args.delivery_rounds = args.rounds
    return run_alone(name, args, make)


def plain_client_parser() -> argparse.ArgumentParser:
    """The command line a broker's plain client runs with (`--client`): its
    subjects' or topics' prefix, how many messages over how many wa_ids, and
    how many publishes at once."""
    p = argparse.ArgumentParser()
    p.add_argument("--client", action="store_true")
    p.add_argument("--prefix", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--in-flight", type=int, required=True)
    return p

"""Delivery to RabbitMQ (the amqp plugin, docs/amqp.md): N messages stored,
then published by `router worker --burst` to a queue of the machine's
RabbitMQ (127.0.0.1:5672), beside a plain aio-pika publisher publishing the
same messages the same way (publisher confirms, persistent, mandatory, one
message at a time per key, as many at once as the router's max_in_flight).
The rate is taken at the broker (the queue's depth, polled every 10 ms) for
both, from its first message to its last; the ratio router / plain is the
figure (issue 22: goal >= 0.5).

    .venv/bin/python bench/broker_amqp.py -n 2000     # alone
    .venv/bin/python bench/run.py --only amqp

Skipped, with a note, where RabbitMQ is not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from context import Context
from destination import Window
from fmt import rate
from preload import preload
from procs import router_argv, say, write_routes
from redisdb import flush

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"
GOAL = 0.5
NAN = float("nan")


@dataclass(frozen=True)
class Case:
    keys: int
    in_flight: int

    @property
    def label(self) -> str:
        return f"{self.keys:,} wa_id{'s' * (self.keys > 1)}, {self.in_flight} in flight"


CASES = (Case(1000, 64), Case(1, 1))


def reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


async def _queue(action: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        if action == "declare":
            await channel.declare_queue(name, durable=True)
        else:
            await channel.queue_delete(name)


async def _watch(queue: str, proc_done: asyncio.Event, expect: int, timeout: float) -> Window:
    """The queue's depth every 10 ms (a passive declare) until it holds
    `expect` messages and the publisher has exited, or it exits short."""
    import aio_pika

    w = Window()
    connection = await aio_pika.connect(URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        deadline = time.perf_counter() + timeout
        exited_at: float | None = None
        while True:
            q = await channel.declare_queue(queue, passive=True)
            n = q.declaration_result.message_count or 0
            now = time.perf_counter()
            w.saw(n, now)
            if proc_done.is_set():
                exited_at = exited_at or now
                # Exited short: the depth may lag its last confirms a little.
                if n >= expect or now - exited_at > 1.0:
                    break
            if now > deadline:
                w.timed_out = True
                break
            await asyncio.sleep(0.01)
    w.delivered = w.last_n
    return w


def watch_queue(proc: object, queue: str, expect: int, timeout: float) -> Window:
    """Poll the queue while `proc` (a Popen) publishes; kill it on a timeout."""
    import subprocess

    assert isinstance(proc, subprocess.Popen)

    async def run() -> Window:
        done = asyncio.Event()

        async def wait_exit() -> None:
            await asyncio.to_thread(proc.wait)
            done.set()

        waiter = asyncio.create_task(wait_exit())
        started = time.perf_counter()
        w = await _watch(queue, done, expect, timeout)
        if w.timed_out:
            proc.kill()
        await waiter
        w.returncode = proc.returncode
        w.wall = time.perf_counter() - started
        return w

    return asyncio.run(run())


@dataclass
class BrokerAmqp:
    ctx: Context
    cases: tuple[Case, ...] = CASES
    skipped: str | None = None
    by_case: dict[Case, dict[str, float]] = field(default_factory=dict)

    def run(self) -> None:
        if not reachable():
            self.skipped = f"RabbitMQ not reachable at {HOST}:{PORT}"
            self.ctx.notes.append(f"amqp: skipped, {self.skipped}")
            say(f"amqp: skipped, {self.skipped}")
            return
        runs: dict[Case, list[dict[str, float]]] = {c: [] for c in self.cases}
        for _ in range(self.ctx.args.delivery_rounds):
            for case in self.cases:
                plain = self.run_plain(case)
                router = self.run_router(case)
                runs[case].append({"plain": plain, "router": router, "ratio": router / plain})
        for case, rs in runs.items():
            self.by_case[case] = {f: statistics.median(r[f] for r in rs) for f in rs[0]}
            ratio = self.by_case[case]["ratio"]
            if not ratio >= GOAL:
                self.ctx.notes.append(
                    f"amqp {case.label}: router / plain aio-pika {ratio:.2f}, under {GOAL}"
                )

    def _fresh_queue(self) -> str:
        queue = f"router-bench-{uuid.uuid4().hex[:12]}"
        asyncio.run(_queue("declare", queue))
        return queue

    def run_router(self, case: Case) -> float:
        ctx = self.ctx
        n = ctx.args.n
        flush(ctx.redis_url)
        preload(ctx.redis_url, n, case.keys)
        queue = self._fresh_queue()
        try:
            amqp = f"    plugin: amqp\n    url: {URL}\n    routing_key: {queue}\n"
            routes = write_routes(ctx.tmp / "routes-amqp.yaml", "", case.in_flight, plugin=amqp)
            env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
            name = f"amqp-router-{case.keys}keys-{case.in_flight}"
            proc = ctx.procs.start(name, router_argv("worker", "--burst"), env)
            w = watch_queue(proc, queue, n, ctx.args.timeout)
            ctx.procs.stop(proc)
        finally:
            asyncio.run(_queue("delete", queue))
        self.check(f"amqp: router worker --burst, {case.label}", w, n)
        return w.rate

    def run_plain(self, case: Case) -> float:
        ctx = self.ctx
        n = ctx.args.n
        queue = self._fresh_queue()
        try:
            argv = [sys.executable, str(Path(__file__).resolve()), "--publish", queue]
            argv += ["-n", str(n), "--keys", str(case.keys), "--in-flight", str(case.in_flight)]
            name = f"amqp-plain-{case.keys}keys-{case.in_flight}"
            proc = ctx.procs.start(name, argv)
            w = watch_queue(proc, queue, n, ctx.args.timeout)
            ctx.procs.stop(proc)
        finally:
            asyncio.run(_queue("delete", queue))
        self.check(f"amqp: plain aio-pika publisher, {case.label}", w, n)
        return w.rate

    def check(self, what: str, w: Window, n: int) -> None:
        say(
            f"{what}: {w.rate:,.0f} msg/s at the broker, {w.delivered}/{n} in the queue, "
            f"process {w.wall:.2f} s, exit {w.returncode}"
        )
        if w.timed_out:
            self.ctx.problems.append(f"{what}: killed after {self.ctx.args.timeout:g} s")
        if w.delivered != n:
            self.ctx.problems.append(f"{what}: the queue holds {w.delivered}, expected {n}")
        if w.returncode:
            self.ctx.problems.append(f"{what}: exited with {w.returncode} (see the logs)")

    def report_lines(self) -> list[str]:
        if self.skipped:
            return ["### Delivery to RabbitMQ (amqp plugin)", "", f"Skipped: {self.skipped}.", ""]
        if not self.by_case:
            return []
        lines = [
            "### Delivery to RabbitMQ (amqp plugin)",
            "",
            f"{self.ctx.args.n:,} messages per run, publisher confirms, persistent, "
            "mandatory; the rate at the broker (queue depth). Plain: aio-pika alone "
            "publishing the same messages one at a time per wa_id, as many at once as "
            f"max_in_flight. Goal: router / plain >= {GOAL}.",
            "",
            "| case | router msg/s | plain aio-pika msg/s | router / plain |",
            "| --- | ---: | ---: | ---: |",
        ]
        for case, d in self.by_case.items():
            lines.append(
                f"| {case.label} | {rate(d['router'])} | {rate(d['plain'])} "
                f"| **{d['ratio']:.2f}** |"
            )
        return [*lines, ""]


# -- the plain publisher (a process of its own, as the router is) -----------


async def publish(queue: str, n: int, keys: int, in_flight: int) -> None:
    """N messages over `keys` wa_ids (message i to wa_id i % keys, as the
    router's preload stores them), `in_flight` publishers, each owning some
    wa_ids and publishing them in order, waiting for each confirm."""
    import aio_pika

    connection = await aio_pika.connect(URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = channel.default_exchange

        workers = min(in_flight, keys)

        async def publisher(worker: int) -> None:
            sequence: dict[str, int] = {}
            for i in range(n):
                if (i % keys) % workers != worker:
                    continue
                wa_id = str(i % keys)
                sequence[wa_id] = sequence.get(wa_id, 0) + 1
                body = f'{{"mensaje":"m{i}","wa_id":"{wa_id}"}}'.encode()
                message = aio_pika.Message(
                    body,
                    headers={
                        "x-router-attempt": 1,
                        "x-router-key": wa_id,
                        "x-router-sequence": sequence[wa_id],
                    },
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=uuid.uuid4().hex,
                    app_id="plain",
                )
                await exchange.publish(message, queue, mandatory=True)

        await asyncio.gather(*(publisher(w) for w in range(workers)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--publish", metavar="QUEUE", help="be the plain publisher (internal)")
    p.add_argument("-n", type=int, default=5000, help="messages per run (default 5000)")
    p.add_argument("--keys", type=int, default=1000, help="(--publish) wa_ids")
    p.add_argument("--in-flight", type=int, default=64, help="(--publish) publishers at once")
    p.add_argument("--delivery-rounds", type=int, default=1, help="runs per case (median)")
    p.add_argument("--timeout", type=float, default=180, help="seconds a run may take")
    args = p.parse_args()
    if args.publish:
        asyncio.run(publish(args.publish, args.n, args.keys, args.in_flight))
        return 0
    from alone import run_alone

    return run_alone("amqp", args, BrokerAmqp)


if __name__ == "__main__":
    raise SystemExit(main())

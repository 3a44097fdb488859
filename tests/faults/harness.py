"""Fault-injection harness: real processes on loopback, nothing mocked.

- `Lab.router`: `python -m router serve` (or `api`) started as a
  subprocess (tests/support/processes.py's `RouterProcess`) with the
  environment the README documents (REDIS_URL, PORT, ROUTES_FILE,
  ROUTER_SHUTDOWN_GRACE, ROUTER_DATA_DIR), killed with SIGKILL or stopped
  with SIGTERM by the test.
- A real valkey-server (`router.redis.embedded.EmbeddedRedis`) on a fixed port and
  data directory, so a SIGKILL + restart reloads its append-only file.
- `FaultBot`: the chatbot, an ASGI app served by uvicorn in a thread. It
  answers as its policy says, notices when the router abandons a request
  (timeout, crash), and records every request, so a test can tell what was
  acknowledged, in which order, and whether one key was ever delivered twice
  at the same time.
- `LoadGenerator`: posts messages per wa_id in a defined order (message n+1
  of a key only after n was answered 200, like a webhook sender that retries
  with the same Idempotency-Key), recording every answer and its latency.
- `analyze`: sent / accepted / delivered / duplicated / lost / order
  violations from what the generator got 200 for and what the bot
  acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_sync
from router_chatbot import error_in_body

from router.queue.keys import all_shards
from router.redis.embedded import EmbeddedRedis
from tests.support import ROOT
from tests.support.bot import read_request, send_json
from tests.support.cluster import Cluster, sync_client
from tests.support.processes import RouterProcess, router_env
from tests.support.processes import run_cli as run_cli  # for the fault tests
from tests.support.routes import KEYS, STORE, write_routes
from tests.support.servers import ServerThread, free_port
from tests.support.servers import wait_until as wait_for

REPO = ROOT
DESTINATION = KEYS.destination
INGEST_PATH = STORE
INSTANCE_HEADER = "X-Router-Instance"


# -- the bot -------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"status": "ok"})
    delay: float = 0.0


@dataclass
class BotRequest:
    """One request the bot received."""

    index: int
    key: str
    seq: int
    instance: str  # which router process sent it (X-Router-Instance)
    attempt: int  # X-Router-Attempt
    start: float
    number: int = 0  # X-Router-Sequence: the router's number of the message (0: none)
    end: float = 0.0
    status: int = 0
    # ack: answered with success; error: answered with a failure;
    # abandoned: the router closed the connection first (timeout, crash).
    outcome: str = "running"


class FaultBot:
    """The chatbot under test. `policy(request) -> Reply` decides each answer
    (default: 200 {"status": "ok"} after a random `latency`)."""

    def __init__(self, latency: tuple[float, float] = (0.005, 0.02)) -> None:
        self.latency = latency
        self.policy: Callable[[BotRequest], Reply] = self.ok
        self.requests: list[BotRequest] = []
        self.acks: list[BotRequest] = []  # in the order the bot acknowledged them
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: ServerThread | None = None
        self._active: dict[str, list[BotRequest]] = defaultdict(list)
        self._overlaps: list[tuple[BotRequest, BotRequest]] = []

    def ok(self, request: BotRequest) -> Reply:
        return Reply(delay=random.uniform(*self.latency))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def start(self) -> FaultBot:
        self.server = ServerThread(self, self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        received = await read_request(scope, receive, send)
        if received is None:
            return
        data, headers = received
        with self.lock:
            request = BotRequest(
                index=len(self.requests),
                key=str(data.get("wa_id")),
                seq=int(data.get("seq", -1)),
                instance=headers.get(INSTANCE_HEADER.lower(), "?"),
                attempt=int(headers.get("x-router-attempt") or 0),
                start=time.monotonic(),
                number=int(headers.get("x-router-sequence") or 0),
            )
            self.requests.append(request)
            active = self._active[request.key]
            self._overlaps.extend((other, request) for other in active)
            active.append(request)
            reply = self.policy(request)
        try:
            if reply.delay > 0 and await self._client_left(receive, reply.delay):
                return
            ok = 200 <= reply.status < 300 and error_in_body(reply.body) is None
            with self.lock:
                request.end = time.monotonic()
                request.status = reply.status
                request.outcome = "ack" if ok else "error"
                if ok:
                    self.acks.append(request)
            await send_json(send, reply.status, reply.body)
        finally:
            with self.lock:
                if request.outcome == "running":
                    request.outcome = "abandoned"
                    request.end = time.monotonic()
                self._active[request.key].remove(request)

    @staticmethod
    async def _client_left(receive: Any, delay: float) -> bool:
        """Wait `delay` seconds; True if the client hung up meanwhile."""
        waiter = asyncio.ensure_future(receive())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=delay)
            return bool(done) and waiter.result().get("type") == "http.disconnect"
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter

    # -- what the tests look at --

    def snapshot(self) -> list[BotRequest]:
        with self.lock:
            return list(self.requests)

    def acked(self) -> list[BotRequest]:
        with self.lock:
            return list(self.acks)

    def concurrent_deliveries(self, slack: float = 0.5) -> list[tuple[BotRequest, BotRequest]]:
        """Pairs of requests for one key that were live at the same time.

        A request the router abandoned (its connection closed: a timeout or
        a killed process) is not concurrency: nobody waits for its answer
        any more. The bot notices the hang-up a little late, so an abandoned
        request counts only if it lasted more than `slack` seconds into the
        next one."""
        with self.lock:
            pairs = list(self._overlaps)
        return [
            (a, b) for a, b in pairs if not (a.outcome == "abandoned" and a.end - b.start <= slack)
        ]


# -- the load generator ----------------------------------------------------------


@dataclass
class Message:
    key: str
    seq: int
    posts: int = 0
    accepted: bool = False
    accepted_at: float = 0.0


@dataclass
class Post:
    """One HTTP POST of a message and what came back."""

    key: str
    seq: int
    url: str
    start: float
    end: float
    outcome: int | str  # the status code, or the name of the client-side error


def message_body(key: str, seq: int) -> bytes:
    return json.dumps({"wa_id": key, "seq": seq, "mensaje": f"{key}#{seq} hola"}).encode()


class HttpClient:
    """A small HTTP/1.1 keep-alive client for the load generator.

    httpx costs milliseconds of CPU per request, and the generator shares a
    small machine with the router it measures; this sends a POST and reads
    the status, headers and body (Content-Length) over pooled connections.
    `post` returns the status code, or the name of what went wrong on the
    wire: ConnectError (refused), ReadError (the connection broke before
    an answer: the message may or may not be stored), Timeout."""

    KEEPALIVE = 2.0

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = (
            defaultdict(list)
        )

    async def post(self, base_url: str, path: str, body: bytes, idempotency_key: str) -> int | str:
        host, port = base_url.removeprefix("http://").split(":")
        idle = self._idle[base_url]
        connection = None
        while idle and connection is None:
            reader, writer, since = idle.pop()
            # Like any keep-alive client, drop a connection idle for long
            # enough that the server may be closing it (uvicorn: after 5 s).
            if time.monotonic() - since < self.KEEPALIVE and not reader.at_eof():
                connection = reader, writer
            else:
                writer.close()
        try:
            if connection is None:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), self.timeout
                )
        except (OSError, TimeoutError):
            return "ConnectError"
        reader, writer = connection
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\nidempotency-key: {idempotency_key}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            writer.write(head + body)
            status, keep = await asyncio.wait_for(self._response(reader), self.timeout)
        except TimeoutError:
            writer.close()
            return "Timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return "ReadError"
        if keep:
            idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        status = int(line.split()[1])
        length, keep = 0, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        if length:
            await reader.readexactly(length)
        return status, keep

    def close(self) -> None:
        for connections in self._idle.values():
            for _, writer, _ in connections:
                writer.close()
        self._idle.clear()


class LoadGenerator:
    """Posts `per_key` messages for each key, in order per key, at about
    `rate` messages per second over all keys, spread round-robin over `urls`.

    A message is retried (same Idempotency-Key, next url) until it is
    answered 200; the key's next message is posted only then, so each key's
    arrival order is defined. A message still not accepted after
    `give_up_after` seconds is left uncertain and its key stops there."""

    def __init__(
        self,
        urls: list[str],
        keys: list[str],
        per_key: int,
        rate: float,
        *,
        first_seq: int = 0,
        concurrency: int = 32,
        retry_delay: float = 0.2,
        give_up_after: float = 120.0,
        request_timeout: float = 15.0,
    ) -> None:
        self.urls = list(urls)
        self.keys = keys
        self.per_key = per_key
        self.rate = rate
        self.first_seq = first_seq
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.give_up_after = give_up_after
        self.request_timeout = request_timeout
        self.messages: list[Message] = []
        self.posts: list[Post] = []
        self.accepted = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._turn = 0
        self._slot = 0
        self.lock = threading.Lock()

    @property
    def total(self) -> int:
        return len(self.keys) * self.per_key

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            self._thread.join(30)
            raise AssertionError(f"load generator still running after {timeout:g}s")
        if self.error is not None:
            raise AssertionError(f"load generator crashed: {self.error!r}") from self.error

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    async def _main(self) -> None:
        self.started_at = time.monotonic()
        semaphore = asyncio.Semaphore(self.concurrency)
        client = HttpClient(self.request_timeout)
        try:
            await asyncio.gather(*(self._key_loop(client, semaphore, k) for k in self.keys))
        finally:
            client.close()

    async def _pace(self) -> None:
        slot = self._slot
        self._slot += 1
        wait = self.started_at + slot / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _key_loop(self, client: HttpClient, semaphore: asyncio.Semaphore, key: str) -> None:
        for seq in range(self.first_seq, self.first_seq + self.per_key):
            if self._stop.is_set():
                return
            await self._pace()
            if not await self._send(client, semaphore, key, seq):
                return

    async def _send(
        self, client: HttpClient, semaphore: asyncio.Semaphore, key: str, seq: int
    ) -> bool:
        message = Message(key, seq)
        with self.lock:
            self.messages.append(message)
        body = message_body(key, seq)
        idempotency_key = f"{key}#{seq}"
        give_up = time.monotonic() + self.give_up_after
        while not self._stop.is_set():
            url = self.urls[self._turn % len(self.urls)]
            self._turn += 1
            async with semaphore:
                start = time.monotonic()
                outcome = await client.post(url, INGEST_PATH, body, idempotency_key)
                end = time.monotonic()
            message.posts += 1
            with self.lock:
                self.posts.append(Post(key, seq, url, start, end, outcome))
                if outcome == 200:
                    message.accepted = True
                    message.accepted_at = end
                    self.accepted += 1
            if outcome == 200:
                return True
            if isinstance(outcome, int) and 400 <= outcome < 500:
                raise AssertionError(f"{key}#{seq}: the router refused it with {outcome}")
            if time.monotonic() > give_up:
                return False
            await asyncio.sleep(self.retry_delay * random.uniform(0.5, 1.5))
        return False

    # -- results --

    def order(self) -> dict[str, list[int]]:
        """Per key, the sequence numbers in the order they were posted."""
        out: dict[str, list[int]] = defaultdict(list)
        with self.lock:
            for m in self.messages:
                out[m.key].append(m.seq)
        for seqs in out.values():
            seqs.sort()
        return dict(out)

    def accepted_set(self) -> set[tuple[str, int]]:
        with self.lock:
            return {(m.key, m.seq) for m in self.messages if m.accepted}

    def posts_snapshot(self) -> list[Post]:
        with self.lock:
            return list(self.posts)


class Lab:
    """Everything one fault test runs, torn down at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_server: EmbeddedRedis | None = None
        self.cluster: Cluster | None = None
        self.bot: FaultBot | None = None
        self.routers: list[RouterProcess] = []
        self.generators: list[LoadGenerator] = []
        self._clients: list[redis_sync.Redis] = []

    # -- parts --

    def start_redis(self, appendfsync: str = "everysec", appendonly: bool = True) -> EmbeddedRedis:
        self.redis_server = EmbeddedRedis(
            self.workdir / "valkey",
            port=free_port(),
            appendfsync=appendfsync,
            appendonly=appendonly,
        )
        self.redis_server.start()
        return self.redis_server

    def start_cluster(self) -> Cluster:
        """A Redis Cluster (3 masters + 3 replicas, AOF everysec) instead."""
        self.cluster = Cluster(self.workdir / "cluster").start()
        return self.cluster

    @property
    def redis_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        assert self.redis_server is not None
        return self.redis_server.url

    def redis(self) -> redis_sync.Redis:
        if self.cluster is not None:
            client = sync_client(self.redis_url)
        else:
            client = redis_sync.Redis.from_url(self.redis_url, socket_timeout=10)
        self._clients.append(client)
        return client

    def start_bot(self, latency: tuple[float, float] = (0.005, 0.02)) -> FaultBot:
        self.bot = FaultBot(latency).start()
        return self.bot

    def routes(self, **destination: Any) -> Path:
        """A routes.yaml for the bot; each router process names itself in a
        header so the bot knows which instance delivered what."""
        assert self.bot is not None
        return write_routes(
            self.workdir / "routes.yaml",
            self.bot.url,
            headers={INSTANCE_HEADER: "${ROUTER_INSTANCE:-main}"},
            **destination,
        )

    def router(
        self, name: str, routes: Path, grace: float = 10.0, command: str = "serve"
    ) -> RouterProcess:
        """`router <command>` as a process of this lab, with the environment
        the README documents; it dies with the test process."""
        process = RouterProcess(
            self.workdir / f"router-{name}.log",
            command=command,
            name=name,  # as ROUTER_INSTANCE: what the bot's requests say
            die_with_parent=True,
            REDIS_URL=self.redis_url,
            ROUTES_FILE=str(routes),
            ROUTER_SHUTDOWN_GRACE=str(grace),
            ROUTER_DATA_DIR=str(self.workdir / f"data-{name}"),
            ROUTER_INSTANCE=name,
            LOG_LEVEL="info",
        )
        self.routers.append(process)
        return process

    def load(
        self, urls: list[str], keys: list[str], per_key: int, rate: float, **kw: Any
    ) -> LoadGenerator:
        generator = LoadGenerator(urls, keys, per_key, rate, **kw)
        self.generators.append(generator)
        return generator

    def cli_env(self, routes: Path) -> dict[str, str]:
        """The environment of `run_cli(..., env=...)` against this lab."""
        return router_env(
            REDIS_URL=self.redis_url,
            ROUTES_FILE=str(routes),
            ROUTER_DATA_DIR=str(self.workdir / "data-cli"),
        )

    def close(self) -> None:
        for generator in self.generators:
            generator.stop()
        for router in self.routers:
            router.kill()
            tail = router.log_tail(25)
            if tail:
                print(f"--- {router.log_path.name} (tail) ---\n{tail}")
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        if self.bot is not None:
            self.bot.stop()
        if self.redis_server is not None:
            self.redis_server.kill()
        if self.cluster is not None:
            self.cluster.stop()

    # -- waiting for the system to settle --

    def wait_drained(
        self, bot: FaultBot, timeout: float, expect_dead: int = 0, shards: int = 1
    ) -> float:
        """Wait until the destination's queue is empty (every lane delivered
        or dead-lettered, nothing leased or delayed), then a moment more so
        answers still on the wire are recorded. Returns when it emptied."""
        client = self.redis()

        def empty() -> bool:
            try:
                state = queue_state(client, shards)
            except redis_sync.RedisError:
                return False
            return (
                state["lanes"] == 0
                and state["leases"] == 0
                and state["delayed"] == 0
                and state["ready"] == 0
                and state["dead"] >= expect_dead
            )

        drained = wait_for(empty, timeout, "the queue to drain")
        time.sleep(0.5)
        return drained


def queue_state(client: redis_sync.Redis, shards: int = 1) -> dict[str, int]:
    """What the destination holds, summed over its shards."""
    state: Counter[str] = Counter()
    for keys in all_shards(KEYS.destination, shards):
        lanes = sum(1 for _ in client.scan_iter(match=keys.lane_prefix + "*", count=1000))
        state.update(
            {
                "lanes": lanes,
                "ready": int(client.llen(keys.ready)),
                "leases": int(client.zcard(keys.leases)),
                "owner": int(client.hlen(keys.owner)),
                "delayed": int(client.zcard(keys.delayed)),
                "attempts": int(client.hlen(keys.attempts)),
                "dead": int(client.llen(keys.dead)),
            }
        )
    return {
        name: state[name]
        for name in ("lanes", "ready", "leases", "owner", "delayed", "attempts", "dead")
    }


# -- analysis ------------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0  # distinct messages the generator posted
    accepted: int = 0  # of those, answered 200
    delivered: int = 0  # accepted messages the bot acknowledged at least once
    duplicated: int = 0  # acknowledgements beyond the first of a message
    lost: int = 0  # accepted, never acknowledged
    order_violations: int = 0  # an ack going back, skipping ahead, or unknown
    uncertain: int = 0  # posted, never answered 200 (may or may not be delivered)
    lost_sample: list[str] = field(default_factory=list)  # every lost message, key#seq
    violation_sample: list[str] = field(default_factory=list)
    # X-Router-Sequence per key at the bot, in ack order: each the last one
    # again (a redelivery) or the next, from 1; anything else is a gap.
    number_gaps: int = 0
    gap_sample: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"sent {self.sent}, accepted {self.accepted}, delivered {self.delivered}, "
            f"duplicated {self.duplicated}, lost {self.lost} {self.lost_sample[:5]}, "
            f"order violations {self.order_violations} {self.violation_sample[:5]}, "
            f"uncertain {self.uncertain}, sequence-number gaps {self.number_gaps} "
            f"{self.gap_sample[:5]}"
        )


def analyze(
    order: dict[str, list[int]],
    accepted: set[tuple[str, int]],
    acks: Iterable[BotRequest],
    resume: bool = False,
) -> Stats:
    """Check the bot's acknowledged sequence per key against the expected
    order: each ack is the next message of its key or a repeat of the last
    one (a redelivery); anything else is an order violation. With `resume`,
    `acks` are a later part of a run: a key's first ack may be any of its
    messages, the order is checked from there."""
    stats = Stats()
    stats.sent = sum(len(v) for v in order.values())
    stats.accepted = len(accepted)
    stats.uncertain = stats.sent - stats.accepted
    acks_by_key: dict[str, list[int]] = defaultdict(list)
    last_number: dict[str, int] = {}
    for ack in acks:
        acks_by_key[ack.key].append(ack.seq)
        before = last_number.get(ack.key, 0)
        if ack.number not in (before, before + 1):
            stats.number_gaps += 1
            stats.gap_sample.append(f"{ack.key}: X-Router-Sequence {ack.number} after {before}")
        last_number[ack.key] = ack.number
    for key in set(order) | set(acks_by_key):
        expected = order.get(key, [])
        position = {seq: i for i, seq in enumerate(expected)}
        highest = -1
        seen: set[int] = set()
        for seq in acks_by_key.get(key, []):
            i = position.get(seq)
            if i is None:
                stats.order_violations += 1
                stats.violation_sample.append(f"{key}#{seq} was never sent")
                continue
            if resume and highest == -1:
                highest = i - 1  # where this part of the run takes up the key
            if seq in seen:
                stats.duplicated += 1
            seen.add(seq)
            if i == highest + 1:
                highest = i
            elif i != highest:
                stats.order_violations += 1
                last = expected[highest] if highest >= 0 else None
                stats.violation_sample.append(f"{key}#{seq} acknowledged after #{last}")
                highest = max(highest, i)
        for seq in expected:
            if (key, seq) in accepted:
                if seq in seen:
                    stats.delivered += 1
                else:
                    stats.lost += 1
                    stats.lost_sample.append(f"{key}#{seq}")
    return stats


def keys_named(count: int, prefix: str = "549110000") -> list[str]:
    """wa_id-like keys."""
    return [f"{prefix}{i:04d}" for i in range(count)]

"""router.queue.batching: concurrent ingest writes share one pipeline, and each
caller still learns exactly what happened to its own write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from router.queue import envelope
from router.queue.batching import ScriptBatcher
from router.queue.enqueue import Target, enqueue
from router.queue.scripts import Scripts
from router.redis import client as redis_client
from router.redis import wire
from router.redis.client import command_written
from router.redis.embedded import EmbeddedRedis
from tests.support.routes import KEYS


async def _store(scripts: Scripts, batcher: ScriptBatcher, key: str, text: str) -> str:
    message_id = envelope.new_message_id()
    raw = envelope.encode(message_id, int(time.time() * 1000), json.dumps(text).encode())
    result = await enqueue(scripts, [Target(KEYS, key)], raw, message_id, None, 60, batcher)
    return result.id


@contextlib.asynccontextmanager
async def batched(
    url: str, max_connections: int = 100
) -> AsyncIterator[tuple[Redis, Scripts, ScriptBatcher]]:
    """A router Redis client on `url`, its scripts, and the enqueue script's batcher."""
    client = redis_client.connect(url, max_connections)
    try:
        scripts = Scripts(client)
        yield client, scripts, ScriptBatcher(client, scripts.enqueue)
    finally:
        await client.aclose()


def _lane(client: redis_sync.Redis, key: str) -> list[str]:
    lane = client.lrange(KEYS.lane(key), 0, -1)
    return [json.loads(bytes(envelope.decode(e).body)) for e in lane]


async def test_concurrent_writes_are_all_stored_once_in_call_order(
    clean_redis: str, redis: redis_sync.Redis
) -> None:
    async with batched(clean_redis) as (_, scripts, batcher):
        before = redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        texts = [f"m{i}" for i in range(300)]
        ids = await asyncio.gather(*(_store(scripts, batcher, "k", t) for t in texts))
        assert len(set(ids)) == 300
        assert _lane(redis, "k") == texts  # the order the calls were made in
        after = redis.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert after - before == 300  # one script run per write, no more


async def test_a_write_that_fails_alone_fails_only_its_caller(
    clean_redis: str, redis: redis_sync.Redis
) -> None:
    async with batched(clean_redis) as (_, scripts, batcher):
        redis.set(KEYS.lane("bad"), "not a list")  # RPUSH on it fails: WRONGTYPE
        results = await asyncio.gather(
            _store(scripts, batcher, "a", "one"),
            _store(scripts, batcher, "bad", "two"),
            _store(scripts, batcher, "a", "three"),
            return_exceptions=True,
        )
        assert isinstance(results[1], redis_sync.ResponseError)
        assert "WRONGTYPE" in str(results[1])
        assert _lane(redis, "a") == ["one", "three"]


async def test_a_script_flushed_from_redis_is_loaded_again(
    clean_redis: str, redis: redis_sync.Redis
) -> None:
    async with batched(clean_redis) as (_, scripts, batcher):
        await _store(scripts, batcher, "k", "before")
        redis.script_flush()  # as after a restart of Redis without its scripts
        await asyncio.gather(*(_store(scripts, batcher, "k", f"after{i}") for i in range(5)))
        assert _lane(redis, "k") == ["before"] + [f"after{i}" for i in range(5)]


@pytest.mark.skipif(os.environ.get("REDIS_URL") is not None, reason="freezes a server it owns")
async def test_a_deadline_tells_a_queued_write_from_a_sent_one(own_redis: EmbeddedRedis) -> None:
    """Redis hangs (SIGSTOP) with one batch on the wire and more writes
    queued behind it: the caller of the sent write may have stored its
    message ("unknown"), the queued ones certainly did not, and they are
    never stored later, when Redis wakes up."""
    assert own_redis.process is not None
    plain = redis_sync.Redis.from_url(own_redis.url)
    async with batched(own_redis.url) as (_, scripts, batcher):
        await _store(scripts, batcher, "k", "warm-up")  # connected, script loaded

        async def store_within(text: str, deadline: float) -> bool:
            """Whether the write may have reached Redis, once the deadline passed."""
            command_written.set(False)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(deadline):
                    await _store(scripts, batcher, "k", text)
            return command_written.get()

        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            sent = asyncio.create_task(store_within("sent", 0.5))
            await asyncio.sleep(0.1)  # its batch is on the wire, unanswered
            queued = await asyncio.gather(*(store_within(f"queued{i}", 0.2) for i in range(3)))
            assert await sent is True  # may be stored: "unknown"
            assert queued == [False, False, False]  # certainly not stored
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        await asyncio.sleep(0.5)  # let anything still in flight land
        await _store(scripts, batcher, "k", "after")
        assert _lane(plain, "k") == ["warm-up", "sent", "after"]
    plain.close()


async def test_a_call_that_never_left_the_process_is_certainly_not_stored(
    clean_redis: str, redis: redis_sync.Redis
) -> None:
    """Sent inline (nothing else on its way) but stuck waiting for a pooled
    connection when its deadline passes: its bytes never went out, so the
    caller learns "not stored", and why (a busy pool, not a slow Redis)."""
    from router.http.errors import redis_cause

    async with batched(clean_redis, max_connections=1) as (client, scripts, batcher):
        holder = asyncio.create_task(client.blpop(["nothing"], 1))  # the one connection
        await asyncio.sleep(0.1)
        command_written.set(False)
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(0.3):
                await _store(scripts, batcher, "k", "never sent")
        assert command_written.get() is False
        assert "no free Redis connection" in redis_cause(caught.value, 0.3)
        await holder
        assert _lane(redis, "k") == []


async def test_a_long_batch_is_no_timeout_while_replies_keep_coming() -> None:
    """A batch shares calls of every shard and destination (Scripts.claims,
    Scripts.acks): reading all its replies may take longer than the socket
    timeout, and each call Redis ran must still get its reply (a timeout
    would leave keys Redis leased to nobody, and count attempts never
    made). The limit is on Redis going quiet, as redis-py's per-read
    timeout is: a server of the test's own answers 12 commands 50 ms apart
    (600 ms in all) under a 500 ms timeout, then stops answering. (The
    server shares the test's loop: a stall of the process longer than
    timeout - gap fires the timeout first, so that margin is wide; with
    100 ms against 40 a CI run on a loaded machine met it.)"""
    gap, timeout, replies = 0.05, 0.5, 12

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readline()
            if not header:
                return
            args = []
            for _ in range(int(header[1:])):
                size = int((await reader.readline())[1:])
                args.append((await reader.readexactly(size + 2))[:-2])
            if args[0].upper() == b"ECHO":
                if args[1] == b"silent":
                    continue  # never answered
                await asyncio.sleep(gap)
                writer.write(b"$%d\r\n%s\r\n" % (len(args[1]), args[1]))
            elif args[0].upper() == b"HELLO":  # as Redis 5 would: RESP2 then
                writer.write(b"-ERR unknown command 'HELLO'\r\n")
            else:  # the rest of the connection's set-up (CLIENT SETINFO, ...)
                writer.write(b"+OK\r\n")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_timeout=timeout)
    try:
        data = b"".join(wire.packed_command("ECHO", f"r{i}") for i in range(replies))
        started = time.monotonic()
        out = await wire.run(client, data, replies)
        assert [bytes(r) for r in out] == [f"r{i}".encode() for i in range(replies)]
        assert time.monotonic() - started > timeout
        # Silence is still a timeout.
        with pytest.raises(redis_sync.exceptions.TimeoutError):
            await wire.run(client, wire.packed_command("ECHO", "silent"), 1)
    finally:
        await client.aclose()
        server.close()

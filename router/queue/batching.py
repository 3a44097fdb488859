"""Group commit: the calls of one Lua script made by concurrent tasks go to
Redis in one pipeline, one round trip, instead of one each. Ingest's
enqueue uses it (the writes of concurrent requests) and so do the
workers' acks (the deliveries that finish together).

A caller hands its script call to the batcher and waits for its own reply:
an ingest request is answered only after Redis ran *its* script, exactly as
without batching. While one pipeline is on the wire, the calls that arrive
queue up and go together in the next; under light load a batch is one call
and costs what a lone EVALSHA costs, under heavy load the round trips (and
the system calls on both ends) are shared by everything that arrived
meanwhile. Measured in docs/benchmarks.md.

What a caller learns when something fails is as precise as without
batching (router.ingest.route's "stored": "no" | "unknown"):
- A caller whose deadline passes while its call is still queued has it
  dropped from the queue, never sent: certainly not run ("no").
- A caller whose deadline passes once its batch is taken may have had it
  run ("unknown"), as for a lone command whose reply was lost.
- A failure of the whole pipeline reaches every caller of the batch, with
  whether its bytes had been written (router.redis.client.command_written).
- An error of one script (OOM, ...) reaches only its caller.
- NOSCRIPT (a Redis restarted or flushed of scripts since): the script did
  not run; it is loaded and the calls it refused are sent again, first.

With `replicas` (ROUTER_REDIS_WAIT), each pipeline ends with `WAIT replicas
timeout` on the same connection, so a call is answered only once that many
replicas hold its write (one WAIT covers the whole batch); fewer in time is
NotReplicated for every call that ran: stored on the primary, but a
failover could still lose it ("unknown").

On a Redis Cluster (ClusterScriptBatcher) each node has a batcher of its
own, so a slow or failing node (a frozen master, a WAIT for a replica it
lost) holds up only the calls for its own slots. A call refused with a
redirect (MOVED, ASK, TRYAGAIN, CLUSTERDOWN: it did not run) is sent once
more after the slot map is read again, which is how a failover is
followed; during a slot migration (ASK twice) it fails as not stored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.redis import wire
from router.redis.client import SOCKET_TIMEOUT, cluster_unavailable, command_written, is_cluster

# Most script calls in one pipeline: bounds the pipeline's memory and the
# time one batch holds a connection.
MAX_BATCH = 256
# Hash tags whose slot a Cluster batcher keeps (a destination shard's one tag:
# a few per destination); past this many it starts again.
_TAGS_KEPT = 4096


@dataclass(slots=True, eq=False)
class _Write:
    """A call waiting in the queue for the sender task."""

    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]
    taken: bool = False  # part of a batch on its way: its bytes may reach Redis
    written: bool = False  # its batch failed after its bytes went to the socket


class NotReplicated(RedisError):
    """The script ran on the primary, but fewer replicas than ROUTER_REDIS_WAIT
    acknowledged the write in time. (Not a ResponseError: the write happened.)"""


# Cluster answers that mean "not run here, ask again": the slot moved or is
# moving (a failover, a resharding).
_REDIRECTS = (AskError, TryAgainError, ClusterDownError)


class ScriptBatcher:
    """Runs one Lua script (by its SHA) for many callers, coalesced: on one
    Redis, or (`node_name`) on one node of a Cluster."""

    def __init__(
        self,
        redis: Redis,
        script: AsyncScript,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        node_name: str | None = None,
    ) -> None:
        self._redis = redis
        self._node_name = node_name
        self.replicas = replicas
        # WAIT's own timeout stays under the socket timeout, so its reply is
        # read rather than the connection dropped as silent.
        self._wait_ms = max(1, int(min(replica_timeout, SOCKET_TIMEOUT - 0.5) * 1000))
        self._source = script.script
        self._queue: collections.deque[_Write] = collections.deque()
        # A batch is on its way (sent by a caller inline, or by the sender
        # task): calls queue up meanwhile. The queue is empty when not busy.
        self._busy = False
        self._sender: asyncio.Task[None] | None = None  # held: the loop keeps weak refs only
        self._loaded = False  # SCRIPT LOAD done on this server
        # Calls are packed here (router.redis.wire), with the client's encoder
        # (a Cluster's is its nodes' too).
        encoder = redis.get_encoder() if node_name else redis.connection_pool.get_encoder()
        self._packer = wire.EvalshaPacker(encoder, script.sha)

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for these KEYS and ARGV (or its error)."""
        if not self._busy:
            # Nothing on its way: send this call now from the caller's own
            # task, as a plain EVALSHA (no future, no hop through the sender
            # task, no pipeline: the common case under light load, and a
            # busy key's acks). The connection notes in the caller's context
            # whether its bytes went out.
            self._busy = True
            try:
                return await self._send_one(keys, args)
            finally:
                self._busy = False
                self._start_sender()  # for calls that queued meanwhile
        write = _Write(keys, args, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        try:
            return await write.future
        except asyncio.CancelledError:
            # The caller's deadline: a queued call is skipped (its future is
            # cancelled now), unless its batch had taken it: then it may
            # have run.
            command_written.set(write.taken)
            if write.future.done() and not write.future.cancelled():
                write.future.exception()  # seen: the caller is cancelled, not failed
            raise
        except Exception:
            command_written.set(write.written)
            raise

    async def _send_one(self, keys: list[str], args: list[Any]) -> Any:
        command_written.set(False)
        if not self._loaded:
            await self._load()
        # A batch of one, sent in this task (the connection notes the write
        # here); WAIT, when asked for, follows it on the same connection.
        [reply] = await self._execute([(keys, args)])
        if isinstance(reply, NoScriptError):  # it did not run: load the script, send again
            await self._load()
            [reply] = await self._execute([(keys, args)])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _load(self) -> None:
        """SCRIPT LOAD (changes no data: it does not count as written)."""
        if self._node_name:
            await self._node().execute_command("SCRIPT", "LOAD", self._source)
        else:
            await self._redis.script_load(self._source)
        self._loaded = True
        command_written.set(False)

    def _start_sender(self) -> None:
        if self._queue and not self._busy:
            self._busy = True
            self._sender = asyncio.create_task(self._send_all(), name="script-batch")

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch: list[_Write] = []
                while self._queue and len(batch) < MAX_BATCH:
                    write = self._queue.popleft()
                    if not write.future.done():  # not given up by its caller
                        write.taken = True
                        batch.append(write)
                if batch:
                    with contextlib.suppress(Exception):  # settled in the calls' futures
                        await self._send(batch)
        finally:
            self._busy = False
        self._start_sender()  # queued while the last batch was settled

    async def _send(self, batch: list[_Write]) -> None:
        command_written.set(False)  # this task's own: set by the connection
        try:
            if not self._loaded:
                # Before the first batch, so that it does not come back
                # refused whole (NOSCRIPT) and go again.
                await self._load()
            replies = await self._execute([(w.keys, w.args) for w in batch])
        except BaseException as exc:
            self._fail(batch, exc, written=command_written.get())
            raise
        refused = []
        for w, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                refused.append(w)
            elif w.future.done():
                continue
            elif isinstance(reply, Exception):
                w.written = isinstance(reply, NotReplicated)  # it ran
                w.future.set_exception(reply)
            else:
                w.future.set_result(reply)
        if refused:
            # The script is gone from Redis (restarted, SCRIPT FLUSH): the
            # refused writes never ran; they go again, first, after a load.
            self._loaded = False
            self._queue.extendleft(reversed(refused))

    async def _execute(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Each call's reply, or the error Redis answered it with (a failure
        that ends the whole batch is raised instead)."""
        # Packed here and written at once (router.redis.wire), not through
        # redis-py's pipelines: their encoder and per-reply timers cost more
        # CPU than the rest of a worker's ack. On a Cluster node a redirect
        # (MOVED, ASK, ...) is its call's reply, as through redis-py's.
        parts: list[bytes] = []
        for keys, args in calls:
            self._packer.pack(keys, args, parts)
        count = len(calls)
        if self.replicas:
            parts.append(wire.packed_command("WAIT", self.replicas, self._wait_ms))
            count += 1
        # (One timer for the whole read: the WAIT's own time on top.)
        waits = self._wait_ms / 1000 if self.replicas else 0.0
        if self._node_name:
            replies = await wire.run_on_node(self._node(), b"".join(parts), count, waits)
        else:
            replies = await wire.run(self._redis, b"".join(parts), count, waits)
        if self.replicas:
            replies = self._replicated(replies[:-1], replies[-1])
        return replies

    def _node(self) -> Any:
        node = self._redis.get_node(node_name=self._node_name)  # type: ignore[attr-defined]
        if node is None:
            raise RedisConnectionError(f"Redis Cluster node {self._node_name} left the slot map")
        return node

    def _replicated(self, replies: list[Any], acked: Any) -> list[Any]:
        """The replies of a pipeline that ended with WAIT: a call that ran
        becomes NotReplicated when fewer replicas than asked acknowledged."""
        if not isinstance(acked, Exception) and int(acked) >= self.replicas:
            return replies
        got = f"{acked}" if isinstance(acked, Exception) else f"{int(acked)}"
        failure = NotReplicated(
            f"the write ran on the Redis primary, but {got} of the {self.replicas} "
            f"replicas ROUTER_REDIS_WAIT asks for acknowledged it within {self._wait_ms} ms"
        )
        return [r if isinstance(r, Exception) else failure for r in replies]

    @staticmethod
    def _fail(batch: list[_Write], exc: BaseException, written: bool) -> None:
        """Settle the batch's calls with the failure that ended it. The
        sender task's cancellation (shutdown) is not handed on as such: the
        callers get an error saying so."""
        if isinstance(exc, asyncio.CancelledError):
            exc = RedisConnectionError("the pipeline was cancelled while on its way")
        for w in batch:
            if not w.future.done():
                w.written = written
                w.future.set_exception(exc)


class ClusterScriptBatcher:
    """A ScriptBatcher per Cluster node, each call routed by its first
    key's slot. Followed: a redirect (the call did not run) once, after the
    slot map is read again; a node that failed, by reading the map again
    before the next call."""

    def __init__(
        self, redis: Redis, script: AsyncScript, replicas: int = 0, replica_timeout: float = 1.0
    ) -> None:
        self._cluster: Any = redis
        self._script = script
        self.replicas = replicas
        self._replica_timeout = replica_timeout
        self._by_node: dict[str, ScriptBatcher] = {}
        self._refresh = False
        # A hash tag's slot (CRC16 of the tag) never changes: worked out once
        # per tag, where redis-py encodes and hashes every call's key. Which
        # node serves the slot is read from the slot map at every call.
        self._slots: dict[str, int] = {}

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        for attempt in (1, 2):
            batcher = await self._batcher_for(keys[0])
            try:
                return await batcher(keys, args)
            except _REDIRECTS:
                self._refresh = True
                if attempt == 2:
                    raise
            except MaxConnectionsError:
                raise  # a busy pool, not a moved node
            except (RedisConnectionError, RedisTimeoutError):
                self._refresh = True
                raise
        raise AssertionError("unreachable")

    def _slot(self, key: str) -> int:
        end = key.find("}", 1) if key[:1] == "{" else -1
        if end < 2:  # no hash tag at its start: hashed whole, every time
            return int(self._cluster.keyslot(key))
        tag = key[: end + 1]
        slot = self._slots.get(tag)
        if slot is None:
            if len(self._slots) >= _TAGS_KEPT:
                self._slots.clear()
            slot = self._slots[tag] = int(self._cluster.keyslot(tag))
        return slot

    async def _batcher_for(self, key: str) -> ScriptBatcher:
        try:
            if self._refresh or not self._cluster.nodes_manager.slots_cache:
                self._refresh = False
                await self._cluster.nodes_manager.initialize()
                command_written.set(False)  # reading the slot map wrote nothing
            slot = self._slot(key)
            served = self._cluster.nodes_manager.slots_cache.get(slot)
            if not served:
                raise SlotNotCoveredError(f'Slot "{slot}" is not covered by the cluster.')
            node = served[0]  # the primary (as get_node_from_key gives it)
        except RedisClusterException as exc:  # no slot map (yet): nothing was sent
            self._refresh = True
            command_written.set(False)
            raise cluster_unavailable(exc) from exc
        batcher = self._by_node.get(node.name)
        if batcher is None:
            batcher = self._by_node[node.name] = ScriptBatcher(
                self._cluster, self._script, self.replicas, self._replica_timeout, node.name
            )
        return batcher


Batcher = ScriptBatcher | ClusterScriptBatcher


def batcher(
    redis: Redis, script: AsyncScript, replicas: int = 0, replica_timeout: float = 1.0
) -> Batcher:
    """The batcher for this client: one, or one per Cluster node."""
    if is_cluster(redis):
        return ClusterScriptBatcher(redis, script, replicas, replica_timeout)
    return ScriptBatcher(redis, script, replicas, replica_timeout)

"""The Redis client the router uses, with bounded waits.

Timeouts are short so that ingest answers 503 quickly when Redis is away
instead of hanging. The client never retries a command by itself: a script
whose reply was lost may have run, and running enqueue or claim twice would
store a message twice or lease keys nobody works on. The callers decide:
ingest answers 503 (the sender retries, deduplicated by Idempotency-Key),
workers repeat only idempotent steps (ack, fail, renew, release are fenced).

The pool waits for a free connection when all `max_connections` are busy
(redis-py's default pool raises "Too many connections" instead, which a
burst of requests against a healthy Redis would turn into 503s blaming
Redis). How long is bounded by the caller (ingest's deadline) and by the
pool's own POOL_TIMEOUT; either way the cause is named as what it is, a
busy pool, not an unreachable Redis.

To tell a sender whether a failed request stored nothing *for certain*,
the connections note in a context variable when a command's bytes were
handed to the socket (connecting, the handshake and health-check PINGs do
not count): until then the server cannot have run it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

# Must stay above the longest BLPOP the workers issue (worker.MAX_IDLE).
SOCKET_TIMEOUT = 3.0
CONNECT_TIMEOUT = 1.0
# Longest a command waits for a free pooled connection when no deadline of
# its caller ends the wait first: a connection busy longer is a stuck one.
POOL_TIMEOUT = SOCKET_TIMEOUT + CONNECT_TIMEOUT

# True once a command of the current task may have reached the server.
command_written: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "command_written", default=False
)

# The pool's size while the current task waits for one of its connections
# (0 when not waiting): a deadline that ends the wait is a busy pool, not a
# slow Redis. Left set when the wait is cancelled, for the caller to read.
waiting_for_connection: contextvars.ContextVar[int] = contextvars.ContextVar(
    "waiting_for_connection", default=0
)


class PoolExhausted(RedisConnectionError):
    """No pooled connection came free within POOL_TIMEOUT."""


def pool_busy_cause(size: int, waited: float) -> str:
    return (
        f"no free Redis connection within {waited:g}s: all {size} in use "
        "(Redis is up; raise ROUTER_REDIS_CONNECTIONS or run more processes)"
    )


class _WaitingPool(ConnectionPool):
    """redis-py's pool, but a command past `max_connections` waits for a
    free connection (up to `timeout` s) instead of raising, in arrival order.

    redis-py's own BlockingConnectionPool waits on an asyncio.Condition,
    which on Python 3.11 can lose a wake-up when a waiter is cancelled just
    after being notified (an ingest deadline in a burst): the others then
    wait out their deadline beside an idle connection. Here the turns are
    plain futures handed on synchronously, so a turn is never lost: a
    cancelled waiter that had been given one passes it to the next. A free
    connection with nobody waiting is taken at once, without a lock (a
    tenth of an ingest request's CPU in a profile went to the Condition)."""

    def __init__(self, timeout: float = POOL_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._turns: collections.deque[asyncio.Future[None]] = collections.deque()
        self._promised = 0  # connections released to a woken waiter, not yet taken

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._turns or self._promised or not self.can_get_connection():
            await self._wait_turn()
        connection = self.get_available_connection()  # synchronous: nobody can interleave
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait_turn(self) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        self._hand_on()  # a connection may be free already (the line was not empty)
        waiting_for_connection.set(self.max_connections)  # left set if cancelled
        try:
            async with asyncio.timeout(self.timeout):
                await turn
        except TimeoutError:
            self._drop(turn)
            waiting_for_connection.set(0)
            raise PoolExhausted(pool_busy_cause(self.max_connections, self.timeout)) from None
        except BaseException:
            self._drop(turn)
            raise
        self._promised -= 1
        waiting_for_connection.set(0)

    def _drop(self, turn: asyncio.Future[None]) -> None:
        """A waiter gives up: out of the line, and a turn it was already
        given goes to the next."""
        if turn.done() and not turn.cancelled():
            self._promised -= 1
            self._hand_on()
        else:
            turn.cancel()
            with contextlib.suppress(ValueError):
                self._turns.remove(turn)

    def _hand_on(self) -> None:
        """Give the turn for a free connection to the longest waiter."""
        while self._turns and self._promised < self._free():
            turn = self._turns.popleft()
            if not turn.done():
                self._promised += 1
                turn.set_result(None)

    def _free(self) -> int:
        """Connections a waiter could have now: idle ones, and ones not yet made."""
        return self.max_connections - len(self._in_use_connections)

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._hand_on()


class _NotesWrites:
    """Mixin for redis-py's asyncio connections: sets `command_written` just
    before a command (not the connection's own setup) goes to the socket."""

    _setting_up = False

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        self._setting_up = True
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._setting_up = False

    async def check_health(self) -> None:
        self._setting_up = True
        try:
            await super().check_health()  # type: ignore[misc]
        finally:
            self._setting_up = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # Connect and health-check first (as the base class would), so that
        # only the command's own bytes set the mark. (The health check's own
        # test first: awaiting it on every command costs two coroutines.)
        if not self.is_connected:  # type: ignore[attr-defined]
            await self.connect_check_health(check_health=False)
        if (
            check_health
            and self.health_check_interval  # type: ignore[attr-defined]
            and asyncio.get_running_loop().time() > self.next_health_check  # type: ignore[attr-defined]
        ):
            await self.check_health()
        if not self._setting_up:
            command_written.set(True)
        writer = self._writer  # type: ignore[attr-defined]
        if writer is not None and not writer.transport.is_closing():
            # The base class wraps every write in asyncio.wait_for, a task and
            # a timer per command (in a worker, more CPU than packing it):
            # the transport takes the bytes at once, and drain() waits only
            # when they could not all go to the socket: then it is timed.
            if isinstance(command, str):
                command = command.encode()
            try:
                if isinstance(command, bytes):
                    writer.write(command)
                else:
                    writer.writelines(command)
                if writer.transport.get_write_buffer_size() == 0:
                    await writer.drain()  # returns at once (raises if the peer is gone)
                    return
                async with asyncio.timeout(self.socket_timeout):  # type: ignore[attr-defined]
                    await writer.drain()
                return
            except TimeoutError as exc:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
                if exc.errno is not None:  # the OS's ETIMEDOUT: the connection is dead
                    raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
                raise RedisTimeoutError("Timeout writing to socket") from None
            except (OSError, RuntimeError) as exc:
                # (uvloop refuses to write to a transport the peer has reset:
                # RuntimeError.)
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
                raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
            except BaseException:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
                raise
        try:
            await super().send_packed_command(command, check_health=False)  # type: ignore[misc]
        except RuntimeError as exc:
            # uvloop refuses to write to a transport the peer has reset
            # (seen when a Cluster master was killed): the connection is
            # gone, which callers handle as such, not as a crash (a 500).
            raise RedisConnectionError(f"connection lost: {exc}") from exc


class _TcpConnection(_NotesWrites, Connection):
    pass


class _TlsConnection(_NotesWrites, SSLConnection):
    pass


class _UnixConnection(_NotesWrites, UnixDomainSocketConnection):
    pass


# redis-py picks the class from the URL's scheme; each gets its noting twin.
_NOTING = {
    Connection: _TcpConnection,
    SSLConnection: _TlsConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def connect(url: str, max_connections: int = 100) -> Redis:
    """A client on `url` with at most `max_connections` connections."""
    pool = _WaitingPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
        client_name="router",
    )
    pool.connection_class = _NOTING.get(pool.connection_class, pool.connection_class)
    # The client owns the pool: closing it closes the connections.
    return Redis.from_pool(pool)


class _WaitingCluster(RedisCluster):
    """redis-py's cluster client, but a command past `max_connections`
    waits its turn (in arrival order) instead of failing at once with
    MaxConnectionsError, as _WaitingPool does for one Redis: commands in
    flight are bounded over all nodes together, so no node's pool is ever
    exhausted. (The batcher's own pipelines go to the nodes directly, one
    batch at a time.)"""

    def __init__(self, *args: Any, commands_in_flight: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = commands_in_flight
        self._turns = asyncio.Semaphore(self._limit)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._turns.locked():
            waiting_for_connection.set(self._limit)  # left set if cancelled
            try:
                async with asyncio.timeout(POOL_TIMEOUT):
                    await self._turns.acquire()
            except TimeoutError:
                raise PoolExhausted(pool_busy_cause(self._limit, POOL_TIMEOUT)) from None
            waiting_for_connection.set(0)
        else:
            await self._turns.acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise cluster_unavailable(exc) from exc
        finally:
            self._turns.release()


def cluster_unavailable(exc: Exception) -> RedisConnectionError:
    """redis-py's error for a Cluster that cannot serve (no slot map yet,
    slots not covered) is not a RedisError: named as what it means to the
    router, Redis unavailable (a 503, not a crash)."""
    return RedisConnectionError(f"Redis Cluster not ready: {exc}")


def connect_cluster(url: str, max_connections: int) -> RedisCluster:
    """redis-py's cluster client on `url` (any node), set like `connect`:
    no retries of its own (a MOVED or ASK redirect is followed: the command
    did not run), writes noted, a command past `max_connections` waits."""
    cluster = _WaitingCluster.from_url(
        url,
        commands_in_flight=max_connections,
        # Each node's own bound, with room beside the commands for the
        # batchers' pipelines, one in flight each (router.queue.batching): the
        # ingest batcher and the claims' and acks' (router.queue.scripts,
        # shared by all shards), and `router worker` refuses more shards than
        # max_connections / 2.
        # (Connections are opened as needed: the bound costs nothing.)
        max_connections=2 * max_connections + 1,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
        client_name="router",
    )
    kwargs = cluster.nodes_manager.connection_kwargs
    kwargs["connection_class"] = _NOTING.get(kwargs["connection_class"], _TcpConnection)
    return cluster


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


async def server_infos(client: Any, section: str) -> list[dict[str, Any]]:
    """INFO `section` of the one server, or of each master of a Cluster
    (asked one by one: redis-py answers a single node with its own INFO but
    several with a map, which cannot be told apart by shape)."""
    if not is_cluster(client):
        return [await client.info(section)]
    masters = client.get_primaries()
    if not masters:  # no slot map yet (a Cluster being formed): read it, or say why not
        try:
            await client.initialize()
        except RedisClusterException as exc:
            raise cluster_unavailable(exc) from exc
        masters = client.get_primaries()
    return list(await asyncio.gather(*(client.info(section, target_nodes=m) for m in masters)))

"""Script calls written by hand: EVALSHA commands packed as RESP here, sent on
a pooled connection in one write, their replies read under one deadline.

On a worker's hot path (an ack per delivered message) redis-py's own path
cost more CPU than the router's code around it: every argument through its
encoder and serializer, per command a retry wrapper and its observability
hooks, and per reply a timer of its own. Here a call's bytes are one join,
the KEYS names (the same few per destination shard, and one lane per
ordering key) are encoded once, and a batch's replies share one timer.

What callers see is what redis-py gives them: an error reply (NOSCRIPT,
OOM, a script's error) is that call's reply, as a ResponseError of the
class redis-py's parser picks; a timeout is redis.exceptions.TimeoutError;
a socket error, ConnectionError. After any failure between the write and
the last reply the connection is dropped (a reply half read cannot be
reused), as redis-py does. The write goes through the connection's own
send_packed_command, so router.redis.client's `command_written` mark and
health checks hold as for any command.

On a Cluster node (run_on_node) the same bytes go over the node's own
connections, taken and given back as redis-py's node pipeline does. A
redirect (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) is a reply like any error
reply: the parser gives it as MovedError, AskError, TryAgainError,
ClusterDownError, the classes redis-py's pipeline hands back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Encoded names kept per packer: a destination shard's keys and its lanes
# (one per ordering key); past this many the cache starts again.
_NAMES_KEPT = 20_000
# Likewise whole KEYS lists (an ack's: 19 names, one its lane).
_KEY_SETS_KEPT = 4_096


class EvalshaPacker:
    """EVALSHA calls of one script as RESP bytes, encoded exactly as
    redis-py's Encoder would (str in the client's encoding, int as its
    digits; anything else through the client's own encoder)."""

    def __init__(self, encoder: Any, sha: str) -> None:
        # (A client's: `redis.connection_pool.get_encoder()`; a Cluster node's:
        # `node.get_encoder()`.)
        self._encoder = encoder
        self._encoding = self._encoder.encoding
        self._errors = self._encoder.encoding_errors
        self._sha = self._bulk(sha.encode())
        self._heads: dict[int, bytes] = {}  # argument count -> the command's start
        self._names: dict[str, bytes] = {}  # a key name -> its bulk string
        self._keys: dict[tuple[Any, ...], bytes] = {}  # a call's KEYS -> their part

    @staticmethod
    def _bulk(data: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(data), data)

    def _value(self, value: Any) -> bytes:
        kind = type(value)
        if kind is bytes:
            data = value
        elif kind is str:
            data = value.encode(self._encoding, self._errors)
        elif kind is int:
            data = b"%d" % value
        else:  # float, memoryview, and what redis-py refuses (bool, None): its way
            data = bytes(self._encoder.encode(value))
        return b"$%d\r\n%s\r\n" % (len(data), data)

    def _name(self, name: str) -> bytes:
        bulk = self._names.get(name)
        if bulk is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            bulk = self._names[name] = self._value(name)
        return bulk

    def pack(self, keys: list[str], args: list[Any], out: list[bytes]) -> None:
        """Append the command's parts to `out` (joined once per write)."""
        count = 3 + len(keys) + len(args)
        head = self._heads.get(count)
        if head is None:
            head = self._heads[count] = b"*%d\r\n$7\r\nEVALSHA\r\n%s" % (count, self._sha)
        out.append(head)
        # A call's KEYS repeat (a shard's names, and its lanes): encoded once.
        names = tuple(keys)
        packed = self._keys.get(names)
        if packed is None:
            if len(self._keys) >= _KEY_SETS_KEPT:
                self._keys.clear()
            parts = [self._value(len(keys))]
            parts += [self._name(k) if type(k) is str else self._value(k) for k in keys]
            packed = self._keys[names] = b"".join(parts)
        out.append(packed)
        value = self._value
        out += [value(arg) for arg in args]


def packed_command(*args: Any) -> bytes:
    """Any other command (WAIT) as RESP, for a batch's tail."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def run(redis: Redis, data: bytes, replies: int, waits: float = 0.0) -> list[Any]:
    """Send `data` (`replies` commands) on one pooled connection and read
    their replies in order: each one's value, or the ResponseError Redis
    answered it with. `waits`: seconds a command of them may block on
    purpose (a trailing WAIT), added to the socket timeout that bounds the
    whole read."""
    pool = redis.connection_pool
    connection: Any = await pool.get_connection()
    try:
        await connection.send_packed_command(data)
        return await _read(connection, replies, waits)
    finally:
        await pool.release(connection)


async def run_on_node(node: Any, data: bytes, replies: int, waits: float = 0.0) -> list[Any]:
    """`run` on a Cluster node (redis-py's ClusterNode): one of its own
    connections, taken and given back as its execute_pipeline does."""
    connection = node.acquire_connection()  # MaxConnectionsError when all are busy
    # (Both hooks are redis-py's since 7: a connection marked for
    # reconnect, by a maintenance notice or a failure on another one, is
    # reconnected before use and closed before reuse.)
    reconnect_if_needed = getattr(node, "disconnect_if_needed", None)
    try:
        if reconnect_if_needed is not None:
            await reconnect_if_needed(connection)
        try:
            await connection.send_packed_command(data)
            return await _read(connection, replies, waits)
        except RedisConnectionError as exc:
            # The node may have closed its other connections too (a restart):
            # the idle ones reconnect when next taken, not fail one batch each.
            mark = getattr(node, "_mark_free_connections_for_reconnect_on_error", None)
            if mark is not None:
                mark(exc)
            raise
    finally:
        try:
            if reconnect_if_needed is not None:
                await reconnect_if_needed(connection)
        finally:
            node.release(connection)


async def _read(connection: Any, replies: int, waits: float = 0.0) -> list[Any]:
    # The parser is what Connection.read_response reads with (a push
    # message between replies, RESP3's, it handles itself); without one
    # (another connection class), redis-py's own reads, a timer each.
    parser = getattr(connection, "_parser", None)
    if parser is None:
        return [await _one(connection) for _ in range(replies)]
    try:
        limit = connection.socket_timeout
        quiet = None if limit is None else limit + waits
        clock = asyncio.get_running_loop().time  # (asked once: a getpid() each on 3.11)
        async with asyncio.timeout(quiet) as timer:
            out = []
            for _ in range(replies):
                out.append(await parser.read_response(disable_decoding=False))
                # The limit is on Redis going quiet, as redis-py's per-read
                # timeout is, not on the whole batch: a batch shares calls of
                # every shard and destination (router.queue.scripts), and one
                # call's long reply (claims carrying megabytes of bodies) must
                # not time out the others, which Redis has run. So each reply
                # leaves at least 0.9 x the limit (rescheduled rarely: replies
                # come within milliseconds).
                if quiet is not None:
                    now = clock()
                    if (timer.when() or now) - now < 0.9 * quiet:
                        timer.reschedule(now + quiet)
    except TimeoutError as exc:
        await connection.disconnect(nowait=True)
        if exc.errno is not None:  # the OS's ETIMEDOUT: the connection is dead
            raise RedisConnectionError(f"Error while reading from Redis: {exc}") from exc
        raise RedisTimeoutError("Timeout reading from Redis") from None
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from Redis: {exc.args}") from exc
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    if connection.health_check_interval:
        next_check = asyncio.get_running_loop().time() + connection.health_check_interval
        connection.next_health_check = next_check
    return out


async def _one(connection: Any) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return exc

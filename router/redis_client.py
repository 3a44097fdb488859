"""The Redis client the router uses, with bounded waits.

Timeouts are short so that ingest answers 503 quickly when Redis is away
instead of hanging. The client never retries a command by itself: a script
whose reply was lost may have run, and running enqueue or claim twice would
store a message twice or lease keys nobody works on. The callers decide:
ingest answers 503 (the sender retries, deduplicated by Idempotency-Key),
workers repeat only idempotent steps (ack, fail, renew, release are fenced).

To tell a sender whether a failed request stored nothing *for certain*,
the connections note in a context variable when a command's bytes were
handed to the socket (connecting, the handshake and health-check PINGs do
not count): until then the server cannot have run it.
"""

from __future__ import annotations

import contextvars
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Must stay above the longest BLPOP the workers issue (worker.MAX_IDLE).
SOCKET_TIMEOUT = 3.0
CONNECT_TIMEOUT = 1.0

# True once a command of the current task may have reached the server.
command_written: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "command_written", default=False
)


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
        # only the command's own bytes set the mark.
        if not self.is_connected:  # type: ignore[attr-defined]
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if not self._setting_up:
            command_written.set(True)
        await super().send_packed_command(command, check_health=False)  # type: ignore[misc]


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


def connect(url: str) -> Redis:
    client = Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
        client_name="router",
    )
    pool = client.connection_pool
    pool.connection_class = _NOTING.get(pool.connection_class, pool.connection_class)
    return client

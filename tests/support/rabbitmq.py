"""The machine's RabbitMQ (127.0.0.1:5672, guest/guest) for the amqp plugin's
tests: queues and exchanges of the test's own (unique names, deleted after),
and consumers collecting what arrives. aio-pika runs in a background event
loop of its own, so sync tests (the router in a thread) use it as async
ones do."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from tests.support.servers import port_open

T = TypeVar("T")

RABBITMQ_PORT = 5672
RABBITMQ_URL = f"amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}/"


def require_rabbitmq() -> None:
    if not port_open(RABBITMQ_PORT):
        pytest.skip(f"RabbitMQ not reachable at 127.0.0.1:{RABBITMQ_PORT}")


@dataclass(frozen=True)
class Received:
    """One message a consumer got."""

    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    content_type: str | None
    delivery_mode: int | None
    routing_key: str | None
    app_id: str | None

    @property
    def key(self) -> str:
        return str(self.headers["x-router-key"])

    @property
    def attempt(self) -> int:
        return int(self.headers["x-router-attempt"])


class Rabbit:
    """A connection to RabbitMQ in a loop of its own; what it declared is
    deleted by close()."""

    def __init__(self, url: str = RABBITMQ_URL) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queues: list[str] = []
        self._exchanges: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> Rabbit:
        self._thread.start()
        self._call(self._connect())
        return self

    def close(self) -> None:
        try:
            self._call(self._cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def name(self, what: str = "q") -> str:
        """A name no other test (or session) uses."""
        return f"router-test-{what}-{uuid.uuid4().hex[:12]}"

    def declare_queue(self, name: str, **arguments: Any) -> str:
        self._queues.append(name)
        self._call(self._declare_queue(name, arguments))
        return name

    def declare_exchange(self, name: str, kind: str = "direct") -> str:
        self._exchanges.append(name)
        self._call(self._declare_exchange(name, kind))
        return name

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._call(self._bind(queue, exchange, routing_key))

    def consume(self, queue: str) -> list[Received]:
        """Collect what arrives on `queue` (acknowledged) into the list
        returned, in the order it arrives."""
        got: list[Received] = []
        self._call(self._consume(queue, got))
        return got

    def message_count(self, queue: str) -> int:
        return self._call(self._count(queue))

    # -- in the loop ---------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _connect(self) -> None:
        self._connection = await aio_pika.connect(self.url, timeout=10)
        self._channel = await self._connection.channel()

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    async def _declare_queue(self, name: str, arguments: dict[str, Any]) -> None:
        await self.channel.declare_queue(name, arguments=arguments or None)

    async def _declare_exchange(self, name: str, kind: str) -> None:
        await self.channel.declare_exchange(name, aio_pika.ExchangeType(kind))

    async def _bind(self, queue: str, exchange: str, routing_key: str) -> None:
        q = await self.channel.get_queue(queue, ensure=False)
        await q.bind(exchange, routing_key)

    async def _consume(self, queue: str, got: list[Received]) -> None:
        q = await self.channel.get_queue(queue, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            with self._lock:
                got.append(
                    Received(
                        body=message.body,
                        headers=dict(message.headers),
                        message_id=message.message_id,
                        content_type=message.content_type,
                        delivery_mode=int(message.delivery_mode),
                        routing_key=message.routing_key,
                        app_id=message.app_id,
                    )
                )
            await message.ack()

        await q.consume(on_message)

    async def _count(self, queue: str) -> int:
        q = await self.channel.declare_queue(queue, passive=True)
        return q.declaration_result.message_count or 0

    async def _cleanup(self) -> None:
        if self._connection is None:
            return
        # A fresh channel: a test may have got the other one closed.
        channel = await self._connection.channel()
        for name in self._queues:
            await channel.queue_delete(name)
        for name in self._exchanges:
            await channel.exchange_delete(name)
        await self._connection.close()


def rabbit_session() -> Iterator[Rabbit]:
    """For a fixture: skip without RabbitMQ, else a Rabbit cleaned up after."""
    require_rabbitmq()
    rabbit = Rabbit().start()
    try:
        yield rabbit
    finally:
        rabbit.close()

"""The amqp destination's sink: one connection and one channel per
destination and process, a publish confirmed per delivery (router_amqp)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_amqp import MAX_SHORT_STRING, AmqpOptions

# RabbitMQ's channel.close (406 PRECONDITION_FAILED) for a message over its
# max_message_size: "message size 200 is larger than configured max size 100"
# (rabbit_channel:check_msg_size; the size is the body's, in bytes).
_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


class AmqpSink:
    """Publish with confirms; one connection and channel, reopened after a break."""

    def __init__(self, options: AmqpOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context
        self.timeout = context.timeout
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        routing_key = self.options.routing_key_for(delivery.key)
        if len(routing_key.encode()) > MAX_SHORT_STRING:
            # The key makes it too long: no retry can publish this message.
            raise DeliveryFailed(
                f"routing key for ordering key {delivery.key!r} is longer than AMQP "
                f"allows ({MAX_SHORT_STRING} bytes)",
                permanent=True,
                message_fault=True,
            )
        message = self._message(delivery)
        connection: AbstractConnection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection, _, exchange = await self._open()
                await exchange.publish(message, routing_key, mandatory=True)
        except aiormq.exceptions.PublishError as exc:
            # basic.return (then basic.ack): the exchange had no queue for it.
            raise DeliveryFailed(
                f"unroutable: exchange {self._exchange_name} has no queue bound for "
                f"routing key {routing_key!r} ({_reply(exc)})",
                message_fault=False,
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise DeliveryFailed(
                f"the broker refused the message (basic.nack) on exchange "
                f"{self._exchange_name}, routing key {routing_key!r}: {_reply(exc)}",
                message_fault=False,
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._drop_channel()
            raise DeliveryFailed(
                f"exchange {self._exchange_name} does not exist: {_reply(exc)}",
                message_fault=False,
            ) from None
        except aiormq.exceptions.ChannelClosed as exc:
            self._drop_channel()
            limit = max_size_exceeded(exc)
            if limit is not None and len(delivery.body) > limit:
                # No retry can publish it. (The other messages in flight on
                # the channel fail too, not permanently: theirs is a retry.)
                raise DeliveryFailed(
                    f"the message ({len(delivery.body)} bytes) is larger than the broker's "
                    f"max_message_size ({limit} bytes): {_reply(exc)}",
                    permanent=True,
                    message_fault=True,
                ) from None
            raise DeliveryFailed(f"the broker closed the channel: {_reply(exc)}") from None
        except TimeoutError:
            # A publish left unconfirmed on a connection we keep could be
            # confirmed later; open afresh instead.
            self._drop(connection)
            raise DeliveryFailed(f"no confirm from the broker within {self.timeout:g}s") from None
        except (OSError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            # Refused, reset, closed by the broker, an invalid channel state:
            # the connection is gone or unusable.
            self._drop(connection)
            raise DeliveryFailed(f"broker connection failed: {_describe(exc)}") from None
        return DeliveryResponse(body=b"basic.ack")

    def _message(self, delivery: Delivery) -> aio_pika.Message:
        headers: dict[str, Any] = {
            "x-router-attempt": delivery.attempt,
            "x-router-key": delivery.key,
        }
        if delivery.sequence is not None:
            headers["x-router-sequence"] = delivery.sequence
        if len(delivery.coalesced) > 1:
            headers["x-router-coalesced"] = len(delivery.coalesced)
        if delivery.traceparent is not None:
            headers["traceparent"] = delivery.traceparent
        if delivery.tracestate is not None:
            headers["tracestate"] = delivery.tracestate
        return aio_pika.Message(
            delivery.body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=delivery.request_id,
            timestamp=datetime.fromtimestamp(delivery.received_at_ms / 1000, UTC),
            app_id="message-router",
        )

    @property
    def _exchange_name(self) -> str:
        return repr(self.options.exchange) if self.options.exchange else "'' (the default)"

    async def _open(self) -> tuple[AbstractConnection, AbstractChannel, AbstractExchange]:
        """The connection, channel and exchange, opened if they are not."""
        if (opened := self._opened()) is not None:
            return opened
        async with self._lock:
            if (opened := self._opened()) is not None:
                return opened
            if self._closed:
                raise RuntimeError("the sink is closed")
            if not _alive(self._connection):
                if self._connection is not None:
                    self._drop(self._connection)
                self._connection = await aio_pika.connect(
                    self.options.url,
                    timeout=self.timeout,
                    client_properties={
                        "connection_name": f"message-router {self.context.destination}"
                    },
                )
                self._channel = None
            connection = self._connection
            assert connection is not None
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            except BaseException:
                # A connection that cannot open a channel is of no more use.
                self._drop(connection)
                raise
            if self.options.exchange:
                exchange = await channel.get_exchange(self.options.exchange, ensure=False)
            else:
                exchange = channel.default_exchange
            self._channel, self._exchange = channel, exchange
            return connection, channel, exchange

    def _opened(self) -> tuple[AbstractConnection, AbstractChannel, AbstractExchange] | None:
        connection, channel, exchange = self._connection, self._channel, self._exchange
        if connection is None or channel is None or exchange is None:
            return None
        if not _alive(connection) or channel.is_closed:
            return None
        return connection, channel, exchange

    def _drop_channel(self) -> None:
        """The broker closed the channel (not the connection): a new one next time."""
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None and not channel.is_closed:
            self._close_later(channel.close())

    def _drop(self, connection: AbstractConnection | None) -> None:
        """Forget the connection an attempt failed on (unless another
        attempt replaced it already), and close it in the background."""
        if connection is None or connection is not self._connection:
            return
        self._connection, self._channel, self._exchange = None, None, None
        self._close_later(connection.close())

    def _close_later(self, closing: Any) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await closing

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self._closed = True
        async with self._lock:
            connection, self._connection = self._connection, None
            self._channel, self._exchange = None, None
        if connection is not None:
            self._close_later(connection.close())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _alive(connection: AbstractConnection | None) -> bool:
    """Open and connected: aio-pika sets `is_closed` only when closed by us,
    and clears `connected` when the broker or the network ends it."""
    return connection is not None and not connection.is_closed and connection.connected.is_set()


def max_size_exceeded(exc: BaseException) -> int | None:
    """The broker's max_message_size, when `exc` is RabbitMQ closing the
    channel for a message over it (406 PRECONDITION_FAILED); else None."""
    if not isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return None
    for text in (*(a for a in exc.args if isinstance(a, str)), str(exc)):
        if (found := _TOO_LARGE.search(text)) is not None:
            return int(found.group(2))
    return None


def _reply(exc: BaseException) -> str:
    """The broker's reply code and text out of an aiormq error."""
    frame = getattr(exc, "frame", None)
    code, text = getattr(frame, "reply_code", None), getattr(frame, "reply_text", None)
    if code is not None:
        return f"{code} {text}"
    if frame is not None:
        return type(frame).__name__
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"

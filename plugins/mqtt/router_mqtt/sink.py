"""The mqtt sink: one connection, a publish waiting for its PUBACK or
PUBCOMP (docs/mqtt.md). Imported when a destination is built, not when the
plugin is listed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ssl
import urllib.parse
import uuid
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_mqtt import PORTS, MqttOptions

# The message id paho gave this task's last publish (read after aiomqtt's
# publish returns, to match the PUBACK's reason code to it).
_MID: contextvars.ContextVar[int] = contextvars.ContextVar("router_mqtt_mid", default=-1)


def properties_for(delivery: Delivery) -> Properties:
    """MQTT 5 user properties: the message id, sequence, attempt, key and
    the sender's trace context."""
    props = Properties(PacketTypes.PUBLISH)
    pairs = [
        ("x-router-id", delivery.request_id),
        ("x-router-attempt", str(delivery.attempt)),
        ("x-router-key", delivery.key),
    ]
    if delivery.sequence is not None:
        pairs.append(("x-router-sequence", str(delivery.sequence)))
    if len(delivery.coalesced) > 1:
        pairs.append(("x-router-coalesced", str(len(delivery.coalesced))))
    if delivery.traceparent:
        pairs.append(("traceparent", delivery.traceparent))
    if delivery.tracestate:
        pairs.append(("tracestate", delivery.tracestate))
    props.UserProperty = pairs
    return props


class _Client(aiomqtt.Client):
    """aiomqtt's client, also keeping what aiomqtt drops: the reason code of
    a refused PUBACK/PUBCOMP (MQTT 5) and the moment the connection ends.
    A PUBREC's reason code never gets here: paho 2.2 ignores it and sends
    PUBREL regardless (docs/mqtt.md, "How the ack works")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[int, str] = {}
        self.lost = asyncio.Event()
        original = self._client.publish

        def publish(*a: Any, **k: Any) -> paho.MQTTMessageInfo:
            info = original(*a, **k)
            _MID.set(info.mid)
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            self.refused[mid] = str(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        self.lost.set()
        super()._on_disconnect(*args, **kwargs)


class MqttSink:
    def __init__(self, options: MqttOptions, context: SinkContext) -> None:
        self.options = options
        self.timeout = context.timeout
        self.max_in_flight = context.max_in_flight
        self.client_id = options.client_id or (
            f"router-{context.destination}-{uuid.uuid4().hex[:8]}"
        )
        self._client: _Client | None = None
        self._connecting = asyncio.Lock()
        self._abandoned: set[asyncio.Future[Any]] = set()  # connects given up on

    async def _connection(self) -> _Client:
        async with self._connecting:
            if self._client is not None and not self._client.lost.is_set():
                return self._client
            await self._drop()
            o = self.options
            parts = urllib.parse.urlsplit(o.url)
            tls = None
            if parts.scheme == "mqtts":
                tls = ssl.create_default_context()
            client = _Client(
                parts.hostname or "127.0.0.1",
                parts.port or PORTS[parts.scheme],
                username=urllib.parse.unquote(parts.username) if parts.username else None,
                password=urllib.parse.unquote(parts.password) if parts.password else None,
                identifier=self.client_id,
                protocol=(
                    aiomqtt.ProtocolVersion.V5
                    if o.protocol == "5"
                    else aiomqtt.ProtocolVersion.V311
                ),
                timeout=max(self.timeout, 0.1),
                keepalive=o.keepalive,
                max_inflight_messages=max(self.max_in_flight, 20),
                tls_context=tls,
            )
            # Shielded: a timeout while connecting (TCP accepted, no CONNACK
            # yet) must not abandon the socket paho opened, nor cancel the
            # executor thread's connect half way; once the connect ends, on
            # its own timeout at the latest, the socket is closed.
            connect = asyncio.ensure_future(client.__aenter__())
            try:
                await asyncio.shield(connect)
            except BaseException:
                self._abandoned.add(connect)
                connect.add_done_callback(self._close_abandoned(client))
                raise
            self._client = client
            return client

    def _close_abandoned(self, client: _Client) -> Any:
        def close(connect: asyncio.Future[Any]) -> None:
            self._abandoned.discard(connect)
            if not connect.cancelled():
                connect.exception()  # retrieved: the attempt has already failed
            # paho's disconnect sends DISCONNECT, then closes the socket (and
            # aiomqtt stops watching it); without a socket it does nothing.
            with contextlib.suppress(Exception):
                client._client.disconnect()

        return close

    async def _drop(self, client: _Client | None = None) -> None:
        """Disconnect (only if the connection is still `client`, when given)."""
        if self._client is None or (client is not None and client is not self._client):
            return
        old, self._client = self._client, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.__aexit__(None, None, None), timeout=2)

    async def _publish(
        self, client: _Client, topic: str, body: bytes, props: Properties | None
    ) -> int:
        """Publish and wait for the broker's acknowledgement; paho's message id."""
        await client.publish(
            topic, body, qos=self.options.qos, retain=self.options.retain, properties=props
        )
        return _MID.get()

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        topic = self.options.topic_for(delivery.key)
        props = properties_for(delivery) if self.options.protocol == "5" else None
        client: _Client | None = None
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._connection()
                publish = asyncio.ensure_future(self._publish(client, topic, delivery.body, props))
                lost = asyncio.ensure_future(client.lost.wait())
                try:
                    await asyncio.wait({publish, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                if not publish.done():
                    publish.cancel()
                    with contextlib.suppress(BaseException):
                        await publish
                    raise aiomqtt.MqttError("connection lost before the broker acknowledged")
                mid = publish.result()
                refused = client.refused.pop(mid, None)
                if refused is not None:
                    raise DeliveryFailed(
                        f"MQTT {self.options.url_shown} refused the message on {topic}: {refused}",
                        message_fault=False,
                    )
        except DeliveryFailed:
            raise
        except (TimeoutError, OSError, aiomqtt.MqttError) as e:
            await self._drop(client)
            what = "timed out" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            raise DeliveryFailed(
                f"MQTT {self.options.url_shown}: {what}", message_fault=False
            ) from None
        ack = "PUBACK" if self.options.qos == 1 else "PUBCOMP"
        return DeliveryResponse(body=f"{ack} for {topic}".encode())

    async def aclose(self) -> None:
        async with self._connecting:
            await self._drop()
        if self._abandoned:  # each ends on aiomqtt's own timeout at the latest
            await asyncio.wait(set(self._abandoned), timeout=self.timeout + 10)

"""The mqtt destination: publish each message to an MQTT broker (docs/mqtt.md).

Each message is published with QoS 1 (the default: the broker's PUBACK
acknowledges it) or QoS 2 (its PUBCOMP does); QoS 0 has no acknowledgement,
so the options refuse it. With MQTT 5 (the default protocol) a PUBACK whose
reason code is a failure (not authorized, quota exceeded, ...) fails the
attempt, and the message carries user properties: ``x-router-id``,
``x-router-sequence``, ``x-router-attempt``, ``x-router-key`` and the
sender's ``traceparent``/``tracestate``. MQTT 3.1.1 has no properties: only
the topic and the body go.

The topic is the ``topic`` template with ``{key}`` replaced by the ordering
key, escaped to one topic level: ASCII letters, digits, ``-`` and ``_`` stay;
every other character (``/``, ``+``, ``#``, ``$``, spaces, ``%``, anything
non-ASCII) becomes ``%XX`` per byte of its UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import ssl
import urllib.parse
import uuid
from typing import Any, Literal

import aiomqtt
import msgspec
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from router.plugin import (
    Delivery,
    DeliveryFailed,
    DeliveryResponse,
    OptionError,
    SinkContext,
    SinkType,
    hookimpl,
)

_SAFE = re.compile(r"[A-Za-z0-9_-]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PORTS = {"mqtt": 1883, "mqtts": 8883}
# The message id paho gave this task's last publish (read after aiomqtt's
# publish returns, to match the PUBACK's reason code to it).
_MID: contextvars.ContextVar[int] = contextvars.ContextVar("router_mqtt_mid", default=-1)


def escape_level(key: str) -> str:
    """The ordering key as one MQTT topic level: letters, digits, `-` and
    `_` as they are, every other character as `%XX` per UTF-8 byte."""
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in key
    )


def _check_topic(topic: str) -> None:
    for name in _PLACEHOLDER.findall(topic):
        if name != "key":
            raise OptionError(("topic",), f"unknown placeholder {{{name}}}: only {{key}}")
    literal = topic.replace("{key}", "k")
    if "{" in literal or "}" in literal:
        raise OptionError(("topic",), "a stray { or }: the only placeholder is {key}")
    if not literal or "\0" in literal:
        raise OptionError(("topic",), "an MQTT topic is not empty and has no NUL")
    if "+" in literal or "#" in literal:
        raise OptionError(("topic",), "wildcards (+ and #) subscribe; a topic to publish has none")
    if literal.startswith("$"):
        raise OptionError(("topic",), "topics starting with $ are the broker's own")
    if len(literal.encode()) > 65535:
        raise OptionError(("topic",), "an MQTT topic is at most 65535 bytes")


class MqttOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    topic: str = "router/{key}"
    qos: int = 1
    retain: bool = False
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None  # default: router-<destination>-<random>
    keepalive: int = 60

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in _PORTS or not parts.hostname:
            raise OptionError(
                ("url",), "an MQTT broker URL: mqtt://host:1883 (or mqtts://host:8883)"
            )
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise OptionError(("url",), "the port of url is not a number") from None
        _check_topic(self.topic)
        if self.qos == 0:
            raise OptionError(
                ("qos",),
                "QoS 0 has no acknowledgement, so nothing says the broker has it: use 1 or 2",
            )
        if self.qos not in (1, 2):
            raise OptionError(("qos",), "qos is 1 (PUBACK) or 2 (PUBCOMP)")
        if self.keepalive < 5:
            raise OptionError(("keepalive",), "keepalive is at least 5 seconds")

    def secret_values(self) -> list[str]:
        password = urllib.parse.urlsplit(self.url).password
        return [password] if password else []

    @property
    def url_shown(self) -> str:
        """The broker's address without credentials, for failure reasons."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or _PORTS[parts.scheme]}"

    def topic_for(self, key: str) -> str:
        return self.topic.replace("{key}", escape_level(key))


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
    a refused PUBACK/PUBREC (MQTT 5) and the moment the connection ends."""

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
                parts.port or _PORTS[parts.scheme],
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
            await client.__aenter__()
            self._client = client
            return client

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


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="mqtt",
            factory=MqttSink,
            options=MqttOptions,
            circuit_breaker=True,
            description=(
                "publish each message to an MQTT topic; the broker's PUBACK (QoS 1) "
                "or PUBCOMP (QoS 2) acknowledges it"
            ),
        )
    ]

"""The mqtt sink: one connection, a publish waiting for its PUBACK or
PUBCOMP (docs/mqtt.md). Imported when a destination is built, not when the
plugin is listed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import struct
import urllib.parse
import uuid
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_mqtt import PORTS, MqttOptions

# How much earlier than `timeout` a cancelled attempt still counts as timed
# out: the router's timer may fire up to a clock tick (1 ms on uvloop) early.
_CLOCK_SLACK = 0.01
_USER_PROPERTY = 0x26  # MQTT 5, 2.2.2.2


# What an MQTT UTF-8 string must not hold (MQTT 5, 1.5.4): U+0000, the
# control characters, and the Unicode non-characters. A broker that checks
# (Mosquitto does) takes such a property as a malformed packet and closes the
# connection every key shares: the message would fail forever.
_NOT_IN_MQTT = re.compile(
    "[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff"
    "\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff"
    "\U0004fffe\U0004ffff\U0005fffe\U0005ffff\U0006fffe\U0006ffff"
    "\U0007fffe\U0007ffff\U0008fffe\U0008ffff\U0009fffe\U0009ffff"
    "\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff"
    "\U000dfffe\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff"
    "\U0010fffe\U0010ffff]"
)


def mqtt_text(value: str) -> str:
    """`value` as it is, or, when it holds a character MQTT strings must
    not (above), percent-encoded whole as urllib.parse.quote(value, safe="")
    does (docs/mqtt.md)."""
    return urllib.parse.quote(value, safe="") if _NOT_IN_MQTT.search(value) else value


def _pair(name: str, value: str) -> bytes:
    n, v = name.encode(), mqtt_text(value).encode()
    return struct.pack("!BH", _USER_PROPERTY, len(n)) + n + struct.pack("!H", len(v)) + v


def _varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer (1.5.5)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class UserProperties(Properties):
    """A PUBLISH's user properties, packed once when made. paho's own
    Properties builds two tables per instance and scans them by name for
    every property it sets and packs: about a third of the CPU a publish
    took. paho only calls pack() on what it is given to publish."""

    UserProperty: list[tuple[str, str]]
    _packed: bytes

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        # Properties.__setattr__ accepts only property names.
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "UserProperty", pairs)
        body = b"".join(_pair(n, v) for n, v in pairs)
        object.__setattr__(self, "_packed", _varint(len(body)) + body)

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:  # paho's debug log of a PUBLISH
        return f"[UserProperty : {self.UserProperty}]"

    __repr__ = __str__


def properties_for(delivery: Delivery) -> UserProperties:
    """MQTT 5 user properties: the message id, sequence, attempt, key and
    the sender's trace context."""
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
    return UserProperties(pairs)


# The acknowledgements that need no decoding: a PUBACK's or PUBCOMP's
# success codes (MQTT 5, 3.4.2.1 and 3.7.2.1), shared (nothing changes them).
_OK_ACKS = {
    (name, code): (ReasonCode(packet, identifier=code), Properties(packet))
    for name, packet, codes in (
        ("PUBACK", PacketTypes.PUBACK, (0x00, 0x10)),
        ("PUBCOMP", PacketTypes.PUBCOMP, (0x00,)),
    )
    for code in codes
}


def _fast_acks(client: paho.Client) -> None:
    """Let `client` take a successful PUBACK/PUBCOMP without decoding it.

    paho decodes each into two ReasonCode and one or two Properties objects,
    each building tables of names on creation: the largest part of the CPU
    an acknowledged publish took once publishing itself was cheap. Its
    remaining length is the packet id (2 bytes), then with MQTT 5 maybe a
    reason code and a property length (MQTT 5, 3.4.2.2: absent when 0).
    Anything else (a refusal, properties, a malformed packet) goes to paho's
    own handler, and so does everything on a paho without these internals."""
    original = getattr(client, "_handle_pubackcomp", None)
    done = getattr(client, "_do_on_publish", None)
    if original is None or done is None or not hasattr(client, "_in_packet"):
        return
    v5 = client.protocol == paho.MQTTv5

    def handle(cmd: str) -> Any:
        packet = client._in_packet["packet"]
        size = len(packet)
        if size == 2:
            code = 0
        elif v5 and (size == 3 or (size == 4 and packet[3] == 0)):
            code = packet[2]
        else:
            return original(cmd)
        ok = _OK_ACKS.get((cmd, code))
        if ok is None:
            return original(cmd)
        mid = (packet[0] << 8) | packet[1]
        with client._out_message_mutex:
            if mid in client._out_messages:
                return done(mid, *ok)
        return paho.MQTT_ERR_SUCCESS

    client._handle_pubackcomp = handle  # type: ignore[method-assign]


class _Client(aiomqtt.Client):
    """aiomqtt's connection, publishing through paho directly: each publish
    is a future that the PUBACK/PUBCOMP resolves (with the reason code of a
    refusal, MQTT 5) and the end of the connection fails, all at once.

    aiomqtt's own publish costs, per message, an Event, a wait_for Task with
    its timer, a scan of every pending call and, past 10 pending, a warning
    logged; and it never fails a pending publish when the connection drops
    (it waits out its timeout), so the sink had to race each publish against
    the connection's end in two more Tasks. A PUBREC's reason code never
    gets here: paho 2.2 ignores it and sends PUBREL regardless (docs/mqtt.md,
    "How the ack works")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False  # lost, or being closed: no new publish on it
        self._acks: dict[int, asyncio.Future[str | None]] = {}
        _fast_acks(self._client)

    def connected(self) -> None:
        """Once connected: an end that aiomqtt notes without paho's
        on_disconnect (a read or write raising) fails the pending too."""
        self._disconnected.add_done_callback(self._ended)

    def send(
        self, topic: str, body: bytes, qos: int, retain: bool, props: Properties | None
    ) -> asyncio.Future[str | None]:
        """Publish; the future of its acknowledgement: None, or the reason
        the broker refused it."""
        for _ in range(8):
            info = self._client.publish(topic, body, qos, retain, props)
            # A packet id still held by a publish the broker never
            # acknowledged (its attempt cancelled early, the connection
            # open): paho has moved on to the next id, which is free.
            if info.rc != paho.MQTT_ERR_QUEUE_SIZE:
                break
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        # paho calls on_publish for QoS 1 and 2 only from a read of the
        # socket, in a later turn of the loop: never before this runs.
        ack = self._loop.create_future()
        self._acks[info.mid] = ack
        return ack

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        ack = self._acks.pop(mid, None)
        if ack is not None and not ack.done():
            refused = getattr(reason_code, "is_failure", False)
            ack.set_result(str(reason_code) if refused else None)

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._ended()
        super()._on_disconnect(*args, **kwargs)

    def _ended(self, disconnected: asyncio.Future[None] | None = None) -> None:
        self.closed = True
        if disconnected is not None and not disconnected.cancelled():
            disconnected.exception()  # retrieved: the pending fail below
        acks, self._acks = self._acks, {}
        for ack in acks.values():
            if not ack.done():
                ack.set_exception(
                    aiomqtt.MqttError("connection lost before the broker acknowledged")
                )


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
        self._closing: set[asyncio.Future[Any]] = set()  # drops after a timeout
        self._ack_name = "PUBACK" if options.qos == 1 else "PUBCOMP"
        # A cancel this late is the router's deadline (its timer may fire a
        # clock tick early).
        self._timed_out_after = max(self.timeout - _CLOCK_SLACK, self.timeout / 2)

    async def _connection(self) -> _Client:
        async with self._connecting:
            if self._client is not None and not self._client.closed:
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
                # No limit of paho's: past one it queues a publish inside paho
                # and sends it later, even after its attempt was cancelled and
                # a retry (then the key's next message) went out: a stale copy
                # after a newer message. The router's max_in_flight bounds it.
                max_inflight_messages=0,
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
            client.connected()
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
        old.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.__aexit__(None, None, None), timeout=2)

    def _drop_soon(self, client: _Client) -> None:
        """Close `client` from a cancelled attempt (which may not wait):
        no new publish takes it from now on."""
        client.closed = True
        drop = asyncio.ensure_future(self._drop(client))
        self._closing.add(drop)
        drop.add_done_callback(self._closing.discard)

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        o = self.options
        topic = o.topic_for(delivery.key)
        props = properties_for(delivery) if o.protocol == "5" else None
        # No timer of the sink's own: the router bounds every attempt by the
        # destination's timeout (router.delivery.attempt, `_timed`), which
        # cancels this coroutine when it runs out. The open connection is
        # taken without the lock, which only serialises opening one.
        client = self._client
        loop = client._loop if client is not None else asyncio.get_running_loop()
        started = loop.time()
        try:
            if client is None or client.closed:
                client = await self._connection()
            try:
                ack = client.send(topic, delivery.body, o.qos, o.retain, props)
            except (ValueError, struct.error) as e:  # (UnicodeEncodeError is a ValueError)
                raise DeliveryFailed(
                    f"MQTT cannot carry this message: {type(e).__name__}: {e}",
                    permanent=True,
                    message_fault=True,
                ) from None
            try:
                refused = await ack
            except asyncio.CancelledError:
                # Cancelled at its timeout (the router's timer): as when the
                # sink timed attempts itself, the connection is suspect (a
                # broker that stopped answering, a half-open TCP connection):
                # it is closed, failing the publishes still waiting on it,
                # and the next attempt opens a new one. A cancel before the
                # timeout (the router stopping, a lease lost) leaves the
                # connection to the other attempts. The ack's entry goes
                # with a late acknowledgement or the connection's end.
                # An ack that landed in the same turn as the cancel: the
                # connection is fine.
                acked = ack.done() and not ack.cancelled()
                if not acked and loop.time() - started >= self._timed_out_after:
                    self._drop_soon(client)
                raise
        except (OSError, aiomqtt.MqttError) as e:
            await self._drop(client)
            raise DeliveryFailed(
                f"MQTT {o.url_shown}: {type(e).__name__}: {e}", message_fault=False
            ) from None
        if refused is not None:
            raise DeliveryFailed(
                f"MQTT {o.url_shown} refused the message on {topic}: {refused}",
                message_fault=False,
            )
        return DeliveryResponse(body=f"{self._ack_name} for {topic}".encode())

    async def aclose(self) -> None:
        async with self._connecting:
            await self._drop()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=3)
        if self._abandoned:  # each ends on aiomqtt's own timeout at the latest
            await asyncio.wait(set(self._abandoned), timeout=self.timeout + 10)

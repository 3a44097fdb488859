"""The mqtt plugin (plugins/mqtt, docs/mqtt.md) against the machine's
Mosquitto (127.0.0.1:1883, MQTT 5): a real router posting over HTTP, a real
subscriber (QoS 1) on topics of this test's own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import httpx
import msgspec
import pytest
from router_mqtt import MqttOptions, escape_level
from router_mqtt.sink import MqttSink

from router.plugin import Delivery, DeliveryFailed, SinkContext
from tests.support.brokers import eventually, failed_attempts, post_in_order, require, unique
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"
KEYS = ["44/91", "k +#$%x", "ñandú"]


class Subscriber:
    """Every message published under `prefix/`, as they arrive."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[aiomqtt.Message] = []

    async def run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(HOST, PORT, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(f"{self.prefix}/#", qos=1)
            ready.set()
            async for message in client.messages:
                self.messages.append(message)

    async def wait_for(self, bodies: set[bytes]) -> None:
        async def all_there() -> bool:
            return bodies <= {bytes(m.payload) for m in self.messages}  # type: ignore[arg-type]

        await eventually(all_there, what=f"{len(bodies)} messages under {self.prefix}/")


@pytest.fixture()
async def subscriber() -> AsyncIterator[Subscriber]:
    require(HOST, PORT, "Mosquitto (MQTT)")
    sub = Subscriber(unique("rt"))
    ready = asyncio.Event()
    task = asyncio.create_task(sub.run(ready))
    subscribed = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, subscribed}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    subscribed.cancel()
    if task.done():
        task.result()  # its error, if it could not subscribe
    assert ready.is_set(), "the subscriber did not subscribe within 10 s"
    try:
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mqtt_settings(prefix: str, **more: Any) -> dict[str, Any]:
    return {"plugin": "mqtt", "topic": prefix + "/{key}", "qos": 1, "max_in_flight": 8, **more}


def check_delivered(sub: Subscriber, ids: dict[bytes, str], once: bool = True) -> None:
    """Every posted body, bytes exact, with its user properties, in order
    per key (a copy of a message whose PUBACK was cut may follow it when
    `once` is False: at least once, never out of order)."""
    got = [m for m in sub.messages if bytes(m.payload) in ids]  # type: ignore[arg-type]
    bodies = [bytes(m.payload) for m in got]  # type: ignore[arg-type]
    assert set(bodies) == set(ids)
    if once:
        assert len(bodies) == len(ids)
    per_key: dict[str, list[int]] = {}
    for m in got:
        raw = bytes(m.payload)  # type: ignore[arg-type]
        sent = json.loads(raw)
        key = sent["wa_id"]
        assert m.topic.value == f"{sub.prefix}/{escape_level(key)}"
        assert m.properties is not None
        props = dict(m.properties.UserProperty)
        assert props["x-router-id"] == ids[raw]
        assert props["x-router-key"] == key
        assert props["x-router-attempt"].isdigit()
        assert int(props["x-router-sequence"]) == sent["n"] + 1
        per_key.setdefault(key, []).append(sent["n"])
    for key, ns in per_key.items():
        assert ns == sorted(ns), f"key {key} out of order: {ns}"


async def test_puback_delivers_every_message_in_order(
    subscriber: Subscriber, start_router: Callable[..., Any]
) -> None:
    router = start_router(URL, **mqtt_settings(subscriber.prefix))
    ids = await post_in_order(router.url, KEYS, 10)
    await subscriber.wait_for(set(ids))
    check_delivered(subscriber, ids)
    assert {m.topic.value for m in subscriber.messages} == {
        f"{subscriber.prefix}/44%2F91",
        f"{subscriber.prefix}/k%20%2B%23%24%25x",
        f"{subscriber.prefix}/%C3%B1and%C3%BA",
    }


async def test_qos_2_pubcomp_delivers(
    subscriber: Subscriber, start_router: Callable[..., Any]
) -> None:
    router = start_router(URL, **mqtt_settings(subscriber.prefix, qos=2))
    ids = await post_in_order(router.url, KEYS, 3)
    await subscriber.wait_for(set(ids))
    check_delivered(subscriber, ids)


async def test_a_cut_connection_loses_nothing_and_keeps_order(
    subscriber: Subscriber, start_router: Callable[..., Any]
) -> None:
    destination = unique("mqtt-")
    with TcpProxy(HOST, PORT) as proxy:
        router = start_router(
            f"mqtt://127.0.0.1:{proxy.port}",
            destination=destination,
            **mqtt_settings(
                subscriber.prefix,
                circuit_breaker={
                    "failing_keys": 2,  # the breaker opens during the cut
                    "probe_interval": "100ms",
                    "probe_interval_max": "300ms",
                },
            ),
        )
        ids = await post_in_order(router.url, KEYS, 10)
        await subscriber.wait_for(set(ids))
        assert proxy.accepted == 1  # one connection for every message
        assert proxy.down() >= 1  # the router's connection cut, new ones refused
        ids |= await post_in_order(router.url, KEYS, 10, start=10)

        async def failing() -> bool:
            return await failed_attempts(router.url, destination) >= 1

        await eventually(failing, what="a failed attempt while the broker is unreachable")
        proxy.up()
        await subscriber.wait_for(set(ids))
        assert proxy.accepted >= 2  # reopened after the cut
        router.stop()
        await eventually(_no_connection(proxy), what="the connection closed at stop")
    check_delivered(subscriber, ids, once=False)


def _no_connection(proxy: TcpProxy) -> Callable[[], Awaitable[bool]]:
    async def closed() -> bool:
        return proxy.live == 0

    return closed


async def test_a_broker_that_never_sends_connack_leaves_no_socket_open() -> None:
    """TCP accepted, no CONNACK: the attempt times out and the socket paho
    opened is closed, not left half-open (the server sees it end)."""
    accepted: list[asyncio.Event] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed = asyncio.Event()
        accepted.append(closed)
        while await reader.read(1024):
            pass  # the CONNECT (and a DISCONNECT), never answered
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = msgspec.convert({"url": f"mqtt://127.0.0.1:{port}"}, MqttOptions)
    try:
        async with httpx.AsyncClient() as http:
            sink = MqttSink(options, SinkContext("d", 0.3, 1, http))
            try:
                for attempt in (1, 2):  # each opens a connection of its own
                    with pytest.raises(DeliveryFailed, match=r"MQTT mqtt://127\.0\.0\.1"):
                        await sink.deliver(Delivery("msg_x", b"{}", "k", attempt, 0, "d"))
            finally:
                await sink.aclose()
        assert len(accepted) == 2

        async def all_closed() -> bool:
            return all(e.is_set() for e in accepted)

        await eventually(all_closed, timeout=10, what="the half-open connections closed")
    finally:
        server.close()
        await server.wait_closed()


async def test_an_attempt_cancelled_at_its_timeout_closes_the_connection(
    subscriber: Subscriber,
) -> None:
    """The PUBLISH lost on the way (held back by the proxy): no PUBACK. The
    router cancels the attempt at its timeout (router.delivery.attempt), as
    asyncio.timeout does here; the sink then closes the connection, and the
    retry goes over a new one and is delivered."""
    prefix = subscriber.prefix
    with TcpProxy(HOST, PORT) as proxy:
        options = msgspec.convert(
            {"url": f"mqtt://127.0.0.1:{proxy.port}", "topic": prefix + "/{key}"}, MqttOptions
        )
        async with httpx.AsyncClient() as http:
            sink = MqttSink(options, SinkContext("d", 0.5, 4, http))
            try:
                await sink.deliver(Delivery("msg_a", b"first", "a", 1, 0, "d"))
                proxy.hold(f"{prefix}/held".encode())
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await sink.deliver(Delivery("msg_held", b"held", "held", 1, 0, "d"))
                assert proxy.held > 0

                async def closed() -> bool:
                    return proxy.live == 0

                await eventually(closed, timeout=5, what="the connection closed")
                assert proxy.cut() == 0  # (only ends the hold: nothing was left to cut)
                await sink.deliver(Delivery("msg_held", b"held", "held", 2, 0, "d"))
                assert proxy.accepted == 2
            finally:
                await sink.aclose()
    await subscriber.wait_for({b"first", b"held"})
    held = [m for m in subscriber.messages if m.payload == b"held"]
    assert len(held) == 1 and held[0].properties is not None
    assert dict(held[0].properties.UserProperty)["x-router-attempt"] == "2"


async def test_an_attempt_cancelled_early_keeps_the_connection() -> None:
    """A cancel before the timeout (the router stopping, a lease lost) is
    not the connection's fault: the others publishing on it go on."""
    require(HOST, PORT, "Mosquitto (MQTT)")
    prefix = unique("rt")
    with TcpProxy(HOST, PORT) as proxy:
        options = msgspec.convert(
            {"url": f"mqtt://127.0.0.1:{proxy.port}", "topic": prefix + "/{key}"}, MqttOptions
        )
        async with httpx.AsyncClient() as http:
            sink = MqttSink(options, SinkContext("d", 30, 4, http))
            try:
                await sink.deliver(Delivery("msg_a", b"first", "a", 1, 0, "d"))
                proxy.hold(f"{prefix}/held".encode())
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await sink.deliver(Delivery("msg_held", b"held", "held", 1, 0, "d"))
                await asyncio.sleep(0.2)
                assert proxy.live == 1 and sink._client is not None
                assert not sink._client.closed
            finally:
                await sink.aclose()


async def _mqtt5_broker(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pubacks: list[bytes]
) -> None:
    """Just enough of an MQTT 5 broker: CONNACK, then each PUBLISH's PUBACK
    as `pubacks` says (what follows the packet id), in turn."""
    while True:
        try:
            kind = (await reader.readexactly(1))[0] >> 4
        except asyncio.IncompleteReadError:
            break
        size, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        packet = await reader.readexactly(size)
        if kind == 1:  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: accepted, no properties
        elif kind == 3:  # PUBLISH, QoS 1: topic, then the packet id
            at = 2 + int.from_bytes(packet[:2], "big")
            rest = pubacks.pop(0)
            writer.write(bytes([0x40, 2 + len(rest)]) + packet[at : at + 2] + rest)
        elif kind == 14:  # DISCONNECT
            break
    writer.close()


async def test_each_puback_reason_code_is_read() -> None:
    """The acknowledgements as MQTT 5 may shape them: the packet id alone,
    a reason code, a reason code and properties; a failure code (>= 0x80)
    refuses the message, whatever else comes with it."""
    reason = b"\x1f\x00\x06no way"  # property Reason String "no way"
    pubacks = [
        b"",  # success, short form
        b"\x10",  # No matching subscribers: delivered
        b"\x00\x00",  # success, an empty property length
        b"\x00" + bytes([len(reason)]) + reason,  # success with a property
        b"\x87",  # Not authorized
        b"\x97\x00",  # Quota exceeded
        b"\x90" + bytes([len(reason)]) + reason,  # Topic Name invalid, with a reason
    ]
    server = await asyncio.start_server(lambda r, w: _mqtt5_broker(r, w, pubacks), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = msgspec.convert({"url": f"mqtt://127.0.0.1:{port}"}, MqttOptions)
    outcomes: list[str] = []
    try:
        async with httpx.AsyncClient() as http:
            sink = MqttSink(options, SinkContext("d", 5, 1, http))
            try:
                for i in range(7):
                    try:
                        answer = await sink.deliver(Delivery(f"m{i}", b"{}", "k", 1, 0, "d"))
                        outcomes.append(answer.body.decode())
                    except DeliveryFailed as e:
                        assert e.message_fault is False
                        outcomes.append(str(e))
            finally:
                await sink.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert outcomes[:4] == ["PUBACK for router/k"] * 4
    refused = f"MQTT mqtt://127.0.0.1:{port} refused the message on router/k: "
    assert outcomes[4:] == [
        refused + "Not authorized",
        refused + "Quota exceeded",
        refused + "Topic name invalid",
    ]


async def test_a_key_mqtt_strings_cannot_hold_is_sent_percent_encoded(
    subscriber: Subscriber, start_router: Callable[..., Any]
) -> None:
    """A key with a control character (or a tab in tracestate) would make
    the broker close the connection every key shares: a poison message for
    the whole destination. Such a value goes percent-encoded; every key is
    delivered, the others' properties as they are."""
    keys = ["a\tb", "z\x00", "44912345678"]
    router = start_router(URL, **mqtt_settings(subscriber.prefix))
    ids: dict[bytes, str] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(3):
            for key in keys:
                raw = json.dumps({"mensaje": f"m{n}", "wa_id": key, "n": n}).encode()
                r = await client.post(
                    router.url + "/v1/store_message",
                    content=raw,
                    headers={"content-type": "application/json"},
                )
                assert r.status_code == 200, r.text
                ids[raw] = r.json()["id"]
    await subscriber.wait_for(set(ids))
    for m in subscriber.messages:
        key = json.loads(bytes(m.payload))["wa_id"]  # type: ignore[arg-type]
        assert m.properties is not None
        props = dict(m.properties.UserProperty)
        expected = key if key.isalnum() else urllib.parse.quote(key, safe="")
        assert props["x-router-key"] == expected
        assert props["x-router-attempt"] == "1"  # never a lost connection

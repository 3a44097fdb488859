"""The nats plugin (plugins/nats, docs/nats.md) against the machine's NATS
server (127.0.0.1:4222, JetStream on): a real router posting over HTTP, a
real consumer reading the stream or the subject. Each test uses subjects
and a stream of its own, deleted after."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from router_nats import NatsOptions, escape_token
from router_nats.sink import NatsSink

from router.plugin import Delivery, DeliveryFailed, SinkContext
from tests.support.brokers import (
    eventually,
    failed_attempts,
    post_in_order,
    require,
    unique,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

HOST, PORT = "127.0.0.1", 4222
URL = f"nats://{HOST}:{PORT}"
KEYS = ["44.91", "k *>%x", "ñandú"]


@pytest.fixture()
async def nc() -> AsyncIterator[NatsClient]:
    require(HOST, PORT, "NATS")
    client = await nats.connect(URL)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture()
async def stream(nc: NatsClient) -> AsyncIterator[tuple[str, str]]:
    """A JetStream stream of this test's own on `<prefix>.>`: (name, prefix)."""
    name, prefix = unique("RT_"), unique("rt")
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"]))
    try:
        yield name, prefix
    finally:
        await js.delete_stream(name)


def nats_settings(prefix: str, **more: Any) -> dict[str, Any]:
    return {"plugin": "nats", "subject": prefix + ".{key}", "max_in_flight": 8, **more}


async def stored(nc: NatsClient, name: str, count: int) -> list[Any]:
    """The stream's messages once it holds `count`, in stream order."""
    js = nc.jetstream()

    async def full() -> bool:
        return (await js.stream_info(name)).state.messages >= count

    await eventually(full, what=f"{count} messages in stream {name}")
    assert (await js.stream_info(name)).state.messages == count
    return [await js.get_msg(name, seq) for seq in range(1, count + 1)]


def check_delivered(messages: list[Any], ids: dict[bytes, str], prefix: str) -> None:
    """Every posted body once, bytes exact, with its headers, in order per key."""
    assert sorted(m.data for m in messages) == sorted(ids)
    per_key: dict[str, list[int]] = {}
    for m in messages:
        sent = json.loads(m.data)
        key = sent["wa_id"]
        assert m.subject == f"{prefix}.{escape_token(key)}"
        assert m.headers["Nats-Msg-Id"] == ids[m.data]
        assert m.headers["X-Router-Attempt"].isdigit()
        assert m.headers["X-Router-Key"] == urllib.parse.quote(key, safe="")
        per_key.setdefault(key, []).append(sent["n"])
        assert int(m.headers["X-Router-Sequence"]) == len(per_key[key])
    for key, ns in per_key.items():
        assert ns == sorted(ns), f"key {key} out of order: {ns}"


async def test_jetstream_publish_ack_delivers_every_message_in_order(
    nc: NatsClient, stream: tuple[str, str], start_router: Callable[..., Any]
) -> None:
    name, prefix = stream
    router = start_router(URL, **nats_settings(prefix, jetstream=True))
    ids = await post_in_order(router.url, KEYS, 10)
    # One more, with the sender's trace context.
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = b'{"mensaje": "traced", "wa_id": "t"}'
    async with httpx.AsyncClient() as client:
        r = await client.post(
            router.url + "/v1/store_message",
            content=traced,
            headers={"content-type": "application/json", "traceparent": traceparent},
        )
    assert r.status_code == 200, r.text
    messages = await stored(nc, name, len(ids) + 1)
    check_delivered([m for m in messages if m.data != traced], ids, prefix)
    (last,) = [m for m in messages if m.data == traced]
    assert last.headers["traceparent"] == traceparent
    assert last.headers["Nats-Msg-Id"] == r.json()["id"]
    assert {m.subject for m in messages} == {
        f"{prefix}.44%2E91",
        f"{prefix}.k%20%2A%3E%25x",
        f"{prefix}.%C3%B1and%C3%BA",
        f"{prefix}.t",
    }


async def test_without_a_stream_a_flushed_core_publish_delivers(
    nc: NatsClient, start_router: Callable[..., Any]
) -> None:
    prefix = unique("rt")
    sub = await nc.subscribe(f"{prefix}.>")
    await nc.flush()
    router = start_router(URL, **nats_settings(prefix))  # jetstream: auto
    ids = await post_in_order(router.url, KEYS, 10)
    messages = [await sub.next_msg(timeout=30) for _ in ids]
    check_delivered(messages, ids, prefix)
    assert all(m.headers["X-Router-Attempt"] == "1" for m in messages)
    await sub.unsubscribe()


async def test_a_redelivered_message_is_dropped_by_the_streams_dedup(
    nc: NatsClient, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    options = msgspec.convert(
        {"url": URL, "subject": prefix + ".{key}", "jetstream": "auto"}, NatsOptions
    )
    async with httpx.AsyncClient() as http:
        sink = NatsSink(options, SinkContext("d", 5.0, 4, http))
        try:
            first = Delivery("msg_dedup1", b'{"a": 1}', "k", 1, 0, "d", sequence=1)
            again = Delivery("msg_dedup1", b'{"a": 1}', "k", 2, 0, "d", sequence=1)
            answers = [await sink.deliver(first), await sink.deliver(again)]
        finally:
            await sink.aclose()
    assert b"duplicate" not in answers[0].body and b"duplicate" in answers[1].body
    (only,) = await stored(nc, name, 1)
    assert only.headers["X-Router-Attempt"] == "1"


async def test_jetstream_true_without_a_stream_fails_the_attempt(nc: NatsClient) -> None:
    prefix = unique("rt")
    sub = await nc.subscribe(f"{prefix}.>")
    options = msgspec.convert(
        {"url": URL, "subject": prefix + ".{key}", "jetstream": True}, NatsOptions
    )
    async with httpx.AsyncClient() as http:
        sink = NatsSink(options, SinkContext("d", 5.0, 4, http))
        try:
            with pytest.raises(DeliveryFailed, match="no JetStream stream") as info:
                await sink.deliver(Delivery("msg_x", b"{}", "k", 1, 0, "d"))
        finally:
            await sink.aclose()
    assert info.value.message_fault is False
    await nc.flush()
    assert sub.pending_msgs == 0  # nothing published to core NATS instead
    await sub.unsubscribe()


async def test_a_cut_connection_loses_nothing_and_keeps_order(
    nc: NatsClient, stream: tuple[str, str], start_router: Callable[..., Any]
) -> None:
    name, prefix = stream
    destination = unique("nats-")
    with TcpProxy(HOST, PORT) as proxy:
        router = start_router(
            f"nats://127.0.0.1:{proxy.port}",
            destination=destination,
            **nats_settings(
                prefix,
                jetstream=True,
                circuit_breaker={
                    "failing_keys": 2,  # the breaker opens during the cut
                    "probe_interval": "100ms",
                    "probe_interval_max": "300ms",
                },
            ),
        )
        ids = await post_in_order(router.url, KEYS, 10)
        await stored(nc, name, len(ids))
        assert proxy.accepted == 1  # one connection for every message
        assert proxy.down() >= 1  # the router's connection cut, new ones refused
        ids |= await post_in_order(router.url, KEYS, 10, start=10)

        async def failing() -> bool:
            return await failed_attempts(router.url, destination) >= 1

        await eventually(failing, what="a failed attempt while NATS is unreachable")
        proxy.up()
        messages = await stored(nc, name, len(ids))
        assert proxy.accepted >= 2  # reopened after the cut
        router.stop()
        await eventually(_no_connection(proxy), what="the connection closed at stop")
    # Exactly once in the stream: an attempt whose ack was cut is retried,
    # and the stream's dedup (Nats-Msg-Id) drops the copy.
    check_delivered(messages, ids, prefix)


def _no_connection(proxy: TcpProxy) -> Callable[[], Awaitable[bool]]:
    async def closed() -> bool:
        return proxy.live == 0

    return closed

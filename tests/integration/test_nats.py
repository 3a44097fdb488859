"""The nats plugin (plugins/nats, docs/nats.md) against the machine's NATS
server (127.0.0.1:4222, JetStream on): a real router posting over HTTP, a
real consumer reading the stream or the subject. Each test uses subjects
and a stream of its own, deleted after."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, StreamConfig
from redis import Redis
from router_nats import NatsOptions, escape_token
from router_nats.sink import NatsSink

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router.queue.keys import DestinationKeys
from tests.support.brokers import (
    eventually,
    failed_attempts,
    nats_server,
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
    held = (await js.stream_info(name)).state.messages
    messages = [await js.get_msg(name, seq) for seq in range(1, held + 1)]
    assert held == count, [(m.subject, m.headers, m.data) for m in messages]
    return messages


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


def sink_options(url: str, prefix: str, jetstream: bool | str) -> NatsOptions:
    return msgspec.convert(
        {"url": url, "subject": prefix + ".{key}", "jetstream": jetstream}, NatsOptions
    )


BIG = 6  # bodies of 900 kB: more than a loopback socket's buffers hold


async def test_a_core_publish_is_acked_only_once_the_server_processed_it(
    nc: NatsClient,
) -> None:
    """A message held back on its way to the server (the network lost it
    after the router wrote it) is not acked, whatever the connection
    carries besides: the attempt fails, and the retry delivers it. The
    network slow first (megabytes in flight, more than the sockets take),
    as nats-py then writes a flush's PING ahead of a message still in its
    pending buffer."""
    prefix = unique("rt")
    sub = await nc.subscribe(f"{prefix}.>")
    await nc.flush()
    big = b"x" * 900_000
    with TcpProxy(HOST, PORT) as proxy:
        options = sink_options(f"nats://127.0.0.1:{proxy.port}", prefix, False)
        async with httpx.AsyncClient() as http:
            sink = NatsSink(options, SinkContext("d", 2.0, 4, http))
            try:
                await sink.deliver(Delivery("msg_a", b"first", "a", 1, 0, "d"))
                assert sink._link is not None and sink._link.nc is not None
                nc_ = sink._link.nc
                sent = nc_.stats["out_msgs"]
                proxy.pause()
                proxy.hold(f"PUB {prefix}.held ".encode())  # HPUB: with headers
                bigs = [
                    asyncio.ensure_future(
                        sink.deliver(Delivery(f"msg_big{i}", big, f"big{i}", 1, 0, "d"))
                    )
                    for i in range(BIG)
                ]

                async def published() -> bool:
                    return bool(nc_.stats["out_msgs"] >= sent + BIG)

                await eventually(published, what="the big messages published")
                for _ in range(10):  # nats-py's flusher writes them and waits
                    await asyncio.sleep(0)
                # The router's deadline (router/delivery/attempt.py): the
                # attempt cancelled past the destination's timeout.
                held = asyncio.ensure_future(
                    asyncio.wait_for(
                        sink.deliver(Delivery("msg_held", b"held", "held", 1, 0, "d")), 2.0
                    )
                )
                for _ in range(10):
                    await asyncio.sleep(0)
                proxy.resume()
                outcomes = await asyncio.gather(*bigs, held, return_exceptions=True)
                assert isinstance(outcomes[-1], TimeoutError), outcomes
                acked = {
                    f"{prefix}.big{i}"
                    for i, outcome in enumerate(outcomes[:-1])
                    if isinstance(outcome, DeliveryResponse)
                }
                assert proxy.held > 0 and proxy.accepted == 1
                # The sink closes a connection an attempt timed out on.
                await eventually(_no_connection(proxy), what="the timed-out connection closed")
                proxy.cut()  # what was held is lost
                # The next attempt, on a new connection, delivers it.
                await sink.deliver(Delivery("msg_held", b"held", "held", 2, 0, "d"))
                assert proxy.accepted == 2
            finally:
                await sink.aclose()
    got = [await sub.next_msg(timeout=10)]
    while got[-1].subject != f"{prefix}.held":
        got.append(await sub.next_msg(timeout=10))
    assert got[0].data == b"first"
    assert acked <= {m.subject for m in got}  # every big one acked was delivered
    assert got[-1].headers["X-Router-Attempt"] == "2"  # attempt 1 never was
    await nc.flush()
    assert sub.pending_msgs == 0
    await sub.unsubscribe()


async def test_the_core_publishes_of_a_loop_turn_share_one_marker(nc: NatsClient) -> None:
    """Core deliveries started at once on one sink (as the worker starts
    its attempts) are confirmed by one marker back to the sink's inbox,
    not one each; an attempt cancelled among them holds none of the
    others up, and its message was published all the same."""
    prefix = unique("rt")
    sub = await nc.subscribe(f"{prefix}.>")
    async with httpx.AsyncClient() as http:
        sink = NatsSink(sink_options(URL, prefix, False), SinkContext("d", 5.0, 64, http))
        try:
            await sink.deliver(Delivery("msg_0", b"0", "k0", 1, 0, "d"))
            assert sink._link is not None
            markers = await nc.subscribe(f"{sink._link.inbox}.*")  # beside the sink's own
            await nc.flush()
            n = 20
            attempts = [
                asyncio.ensure_future(
                    sink.deliver(Delivery(f"msg_{i}", str(i).encode(), f"k{i}", 1, 0, "d"))
                )
                for i in range(1, n + 1)
            ]
            await asyncio.sleep(0)  # every attempt published and waits
            attempts[0].cancel()
            outcomes = await asyncio.wait_for(asyncio.gather(*attempts, return_exceptions=True), 10)
            assert isinstance(outcomes[0], asyncio.CancelledError), outcomes[0]
            assert all(isinstance(o, DeliveryResponse) for o in outcomes[1:]), outcomes
            await nc.flush()
            assert markers.pending_msgs == 1  # on main: one per attempt, 20
        finally:
            await sink.aclose()
    got = {(await sub.next_msg(timeout=10)).data for _ in range(n + 1)}
    assert got == {str(i).encode() for i in range(n + 1)}
    await sub.unsubscribe()


@pytest.mark.parametrize("turns", [1, 2])  # 1: before the marker is sent, 2: after
async def test_a_connection_dropped_under_a_shared_marker_fails_each_attempt(
    nc: NatsClient, turns: int
) -> None:
    """The connection closes (an attempt's deadline drops it) while core
    publishes wait for their shared marker: each attempt fails at once,
    whether the marker was sent yet or not."""
    prefix = unique("rt")
    async with httpx.AsyncClient() as http:
        sink = NatsSink(sink_options(URL, prefix, False), SinkContext("d", 5.0, 64, http))
        try:
            await sink.deliver(Delivery("msg_0", b"0", "k0", 1, 0, "d"))
            attempts = [
                asyncio.ensure_future(sink.deliver(Delivery(f"msg_{i}", b"x", f"k{i}", 1, 0, "d")))
                for i in range(1, 6)
            ]
            for _ in range(turns):
                await asyncio.sleep(0)
            await sink._drop()
            outcomes = await asyncio.wait_for(asyncio.gather(*attempts, return_exceptions=True), 5)
        finally:
            await sink.aclose()
    assert all(isinstance(o, DeliveryFailed) and "Lost" in str(o) for o in outcomes), outcomes


PERMISSIONS = """
authorization {
  users = [
    {
      user: router, password: pw,
      permissions: {
        publish: { allow: ["ok.>", "_INBOX.>"] },
        subscribe: { allow: ["_INBOX.>"] }
      }
    },
    { user: narrow, password: pw, permissions: { publish: { allow: ["ok.>"] } } },
    { user: reader, password: pw }
  ]
}
"""


async def test_a_publish_the_server_refuses_is_never_acked(tmp_path: Path) -> None:
    """A publish permissions violation (the server answers -ERR and keeps
    the connection open) fails the attempt, as the destination's fault;
    a permitted subject on the same connection is delivered."""
    with nats_server(tmp_path, PERMISSIONS) as port:
        reader = await nats.connect(f"nats://reader:pw@127.0.0.1:{port}")
        sub = await reader.subscribe("*.k")  # ok.k, denied.k
        await reader.flush()
        async with httpx.AsyncClient() as http:
            url = f"nats://router:pw@127.0.0.1:{port}"
            sinks = [
                NatsSink(sink_options(url, prefix, False), SinkContext("d", 2.0, 4, http))
                for prefix in ("ok", "denied")
            ]
            try:
                with pytest.raises(DeliveryFailed, match="ermission") as info:
                    await sinks[1].deliver(Delivery("msg_no", b"no", "k", 1, 0, "d"))
                assert info.value.message_fault is False
                assert "timed out" not in str(info.value)
                await sinks[0].deliver(Delivery("msg_ok", b"ok", "k", 1, 0, "d"))
                # A second message on the refused subject's connection, still open.
                with pytest.raises(DeliveryFailed, match="ermission"):
                    await sinks[1].deliver(Delivery("msg_no", b"no", "k", 2, 0, "d"))
                # Publishes sharing one marker: only the refused one fails.
                batch = NatsSink(
                    msgspec.convert(
                        {"url": url, "subject": "{key}.batch", "jetstream": False}, NatsOptions
                    ),
                    SinkContext("d", 2.0, 4, http),
                )
                try:
                    await batch.deliver(Delivery("msg_bw", b"b", "ok", 1, 0, "d"))  # connected
                    outcomes = await asyncio.wait_for(
                        asyncio.gather(
                            *(
                                batch.deliver(Delivery(f"msg_b{i}", b"b", key, 1, 0, "d"))
                                for i, key in enumerate(("ok", "denied", "ok", "denied", "ok"))
                            ),
                            return_exceptions=True,
                        ),
                        10,
                    )
                finally:
                    await batch.aclose()
                refused = [isinstance(o, DeliveryFailed) for o in outcomes]
                assert refused == [False, True, False, True, False], outcomes
                assert all("ermission" in str(o) for o in outcomes if isinstance(o, Exception))
                # A user that may not use its inbox: a clear failure, no hang.
                narrow = NatsSink(
                    sink_options(f"nats://narrow:pw@127.0.0.1:{port}", "ok", False),
                    SinkContext("d", 2.0, 4, http),
                )
                try:
                    with pytest.raises(DeliveryFailed, match=r"(?i)_inbox") as inbox:
                        await narrow.deliver(Delivery("msg_n", b"n", "n", 1, 0, "d"))
                    assert "timed out" not in str(inbox.value)
                finally:
                    await narrow.aclose()
            finally:
                for sink in sinks:
                    await sink.aclose()
        first = await sub.next_msg(timeout=10)
        await reader.flush()
        assert (first.subject, first.data) == ("ok.k", b"ok")
        assert sub.pending_msgs == 0  # nothing on denied.k
        await reader.close()


JETSTREAM_PERMISSIONS = """
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{
      user: nojs, password: pw,
      permissions: {{
        publish: {{ allow: ["ok.>", "_INBOX.>"] }},
        subscribe: {{ allow: ["_INBOX.>"] }}
      }}
    }},
    {{
      user: js, password: pw,
      permissions: {{
        publish: {{ allow: ["ok.>", "_INBOX.>", "$JS.API.>"] }},
        subscribe: {{ allow: ["_INBOX.>"] }}
      }}
    }},
    {{
      user: mixed, password: pw,
      permissions: {{
        publish: {{ allow: ["ok.k", "ok.Ab", "_INBOX.>", "$JS.API.>"] }},
        subscribe: {{ allow: ["_INBOX.>"] }}
      }}
    }},
    {{ user: admin, password: pw }}
  ]
}}
"""


async def test_a_stream_lookup_or_jetstream_publish_refused_fails_at_once(
    tmp_path: Path,
) -> None:
    """A user who may not publish to $JS.API (the stream lookup of
    jetstream: auto and true) or to the subject itself gets the server's
    -ERR and no reply: the attempt fails at once, naming the refusal and
    the fix, instead of waiting for its deadline on every message."""
    config = JETSTREAM_PERMISSIONS.format(store=tmp_path / "jetstream")
    with nats_server(tmp_path, config) as port:
        admin = await nats.connect(f"nats://admin:pw@127.0.0.1:{port}")
        js = admin.jetstream()
        await js.add_stream(StreamConfig(name="OK", subjects=["ok.>"]))
        await js.add_stream(StreamConfig(name="DENIED", subjects=["denied.>"]))
        timeout = 30.0  # the attempts' own deadline: far longer than the test waits

        def sink(user: str, prefix: str, jetstream: bool | str) -> NatsSink:
            url = f"nats://{user}:pw@127.0.0.1:{port}"
            return NatsSink(
                sink_options(url, prefix, jetstream), SinkContext("d", timeout, 4, http)
            )

        async with httpx.AsyncClient() as http:
            sinks = [
                sink("nojs", "ok", "auto"),
                sink("nojs", "ok", True),
                sink("nojs", "ok", False),
                sink("js", "denied", True),
                sink("js", "ok", True),
            ]
            try:
                for s in sinks[:2]:
                    with pytest.raises(DeliveryFailed) as lookup:
                        await asyncio.wait_for(
                            s.deliver(Delivery("msg_a", b"a", "k", 1, 0, "d")), 10
                        )
                    text = str(lookup.value)
                    assert "$JS.API.STREAM.LIST" in text and "jetstream: false" in text, text
                    assert "ermission" in text and lookup.value.message_fault is False
                # jetstream: false, the fix it names: a core publish, delivered.
                await asyncio.wait_for(
                    sinks[2].deliver(Delivery("msg_c", b"c", "k", 1, 0, "d")), 10
                )
                with pytest.raises(DeliveryFailed, match="ermission") as publish:
                    await asyncio.wait_for(
                        sinks[3].deliver(Delivery("msg_d", b"d", "k", 1, 0, "d")), 10
                    )
                assert "denied.k" in str(publish.value)
                answer = await asyncio.wait_for(
                    sinks[4].deliver(Delivery("msg_j", b"j", "k", 1, 0, "d")), 10
                )
                assert answer.body is not None and b"stream OK" in answer.body
            finally:
                for s in sinks:
                    await s.aclose()
        stored = await js.stream_info("OK")
        assert stored.state.messages == 2  # the core publish and the acked one
        assert (await js.stream_info("DENIED")).state.messages == 0
        await admin.close()


async def test_a_refused_publish_fails_only_its_own_attempt(tmp_path: Path) -> None:
    """Attempts waiting on one connection at once: the server's refusal of
    one subject fails that attempt only. nats-py lowercases the refusal's
    text, so a refusal of ok.ab must not fail the attempt on ok.Ab (the
    server took it): with both waiting, the deadline decides for ok.ab."""
    config = JETSTREAM_PERMISSIONS.format(store=tmp_path / "jetstream")
    with nats_server(tmp_path, config) as port:
        admin = await nats.connect(f"nats://admin:pw@127.0.0.1:{port}")
        js = admin.jetstream()
        await js.add_stream(StreamConfig(name="OK", subjects=["ok.>"]))
        async with httpx.AsyncClient() as http:
            mixed = NatsSink(
                sink_options(f"nats://mixed:pw@127.0.0.1:{port}", "ok", True),
                SinkContext("d", 30.0, 4, http),
            )
            try:
                await asyncio.wait_for(mixed.deliver(Delivery("msg_0", b"0", "k", 1, 0, "d")), 10)
                allowed, refused = await asyncio.wait_for(
                    asyncio.gather(
                        mixed.deliver(Delivery("msg_k", b"k", "k", 2, 0, "d")),
                        mixed.deliver(Delivery("msg_x", b"x", "x", 1, 0, "d")),
                        return_exceptions=True,
                    ),
                    10,
                )
                assert isinstance(allowed, DeliveryResponse), allowed
                assert isinstance(refused, DeliveryFailed) and "ok.x" in str(refused), refused
                lower, upper = await asyncio.gather(
                    asyncio.wait_for(mixed.deliver(Delivery("msg_a", b"a", "ab", 1, 0, "d")), 3),
                    mixed.deliver(Delivery("msg_A", b"A", "Ab", 1, 0, "d")),
                    return_exceptions=True,
                )
                assert isinstance(upper, DeliveryResponse), upper
                # Refused at once if ok.Ab's PubAck came first, else at the deadline.
                assert isinstance(lower, DeliveryFailed | TimeoutError), lower
            finally:
                await mixed.aclose()
        stored = await js.stream_info("OK")
        assert stored.state.messages == 3  # msg_0, msg_k, msg_A
        await admin.close()


async def test_a_message_over_max_payload_is_given_up_at_once(
    nc: NatsClient, start_router: Callable[..., Any], redis: Redis
) -> None:
    """NATS counts the headers in max_payload: a body just under it is
    refused by the router before the server sees it (the server would
    reset the connection every key shares), dead-lettered at its first
    attempt; the other keys go on, on the same connection."""
    prefix = unique("rt")
    destination = unique("nats-")
    sub = await nc.subscribe(f"{prefix}.>")
    await nc.flush()
    big = json.dumps({"mensaje": "", "wa_id": "big"}).encode()
    big = big.replace(b'""', b'"' + b"x" * (nc.max_payload - 100 - len(big)) + b'"')
    assert len(big) == nc.max_payload - 100
    with TcpProxy(HOST, PORT) as proxy:
        router = start_router(
            f"nats://127.0.0.1:{proxy.port}",
            destination=destination,
            **nats_settings(prefix, jetstream=False),
        )
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                router.url + "/v1/store_message",
                content=big,
                headers={"content-type": "application/json"},
            )
        assert r.status_code == 200, r.text
        ids = await post_in_order(router.url, KEYS, 3)
        messages = [await sub.next_msg(timeout=30) for _ in ids]
        check_delivered(messages, ids, prefix)
        dead = DestinationKeys(destination).dead

        async def given_up() -> bool:
            return bool(redis.llen(dead))

        await eventually(given_up, what="the big message dead-lettered")
        [letter] = [json.loads(raw) for raw in redis.lrange(dead, 0, -1)]
        assert letter["attempts"] == 1
        assert "max_payload" in letter["error"]
        assert proxy.accepted == 1 and proxy.live == 1  # never reset
    await nc.flush()
    assert sub.pending_msgs == 0  # the big one never published
    await sub.unsubscribe()


async def test_one_stream_list_serves_every_key(tmp_path: Path) -> None:
    """The streams are listed once per destination (STREAM_CHECK_SECONDS),
    not once per key: a router with many conversations asks JetStream
    once, and keeps nothing per key. On a server of its own: on the shared
    one, every test running alongside (other workers, other runs) lists its
    streams too, and its requests would be counted here."""
    store = tmp_path / "jetstream"
    with nats_server(tmp_path, f'jetstream {{ store_dir: "{store}" }}') as port:
        url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url)
        try:
            name, prefix = unique("RT_"), unique("rt")
            await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"]))
            requests = await nc.subscribe("$JS.API.STREAM.>")
            await nc.flush()
            async with httpx.AsyncClient() as http:
                sink = NatsSink(sink_options(url, prefix, "auto"), SinkContext("d", 5.0, 8, http))
                try:
                    answers = await asyncio.gather(
                        *(
                            sink.deliver(
                                Delivery(f"msg_k{i}", b"{}", f"k{i}", 1, 0, "d", sequence=1)
                            )
                            for i in range(40)
                        )
                    )
                finally:
                    await sink.aclose()
            assert all(a.body.startswith(f"stream {name} seq ".encode()) for a in answers)
            await stored(nc, name, 40)
            await nc.flush()
            asked = []
            while requests.pending_msgs:
                asked.append((await requests.next_msg(timeout=1)).subject)
            # (the test's own reads are STREAM.INFO and STREAM.MSG.GET)
            assert [s for s in asked if s.endswith((".LIST", ".NAMES"))] == ["$JS.API.STREAM.LIST"]
            await requests.unsubscribe()
        finally:
            await nc.close()


async def test_a_capturing_stream_never_falls_back_to_core_nats(nc: NatsClient) -> None:
    """Refused PubAcks (a stream full, discard: new) make the sink list the
    streams again while other attempts wait for a list: none of them may
    take the stream for gone and publish to core NATS."""
    name, prefix = unique("RT_"), unique("rt")
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=name, subjects=[f"{prefix}.>"], max_msgs=1, discard=DiscardPolicy.NEW)
    )
    outcomes: list[str] = []
    try:
        async with httpx.AsyncClient() as http:
            sink = NatsSink(sink_options(URL, prefix, "auto"), SinkContext("d", 5.0, 64, http))
            try:
                for round_ in range(100):

                    async def one(i: int, round_: int = round_) -> str:
                        delivery = Delivery(f"msg_{round_}_{i}", b"{}", f"k{i}", 1, 0, "d")
                        try:
                            return (await sink.deliver(delivery)).body.decode()
                        except DeliveryFailed as e:
                            return e.reason

                    outcomes += await asyncio.gather(*(one(i) for i in range(64)))
            finally:
                await sink.aclose()
    finally:
        await js.delete_stream(name)
    assert not [o for o in outcomes if "core NATS" in o]
    assert sum(o.startswith(f"stream {name} seq 1") for o in outcomes) == 1
    assert sum("JetStream refused the message" in o for o in outcomes) == len(outcomes) - 1


@pytest.mark.parametrize("listing", [False, True], ids=["publishing", "listing streams"])
async def test_an_attempt_stalled_in_nats_py_ends_at_the_deadline(
    nc: NatsClient, stream: tuple[str, str], listing: bool
) -> None:
    """The connection stalls with megabytes queued: nats-py's publish then
    waits for its buffer and swallows a cancellation. The router cancels an
    attempt once, at its deadline: the attempt must end there, whether it
    was publishing or waiting for the stream list, and the next attempt
    publishes on a new connection."""
    name, prefix = stream
    big = b"x" * 900_000
    with TcpProxy(HOST, PORT) as proxy:
        async with httpx.AsyncClient() as http:
            options = sink_options(f"nats://127.0.0.1:{proxy.port}", prefix, "auto")
            sink = NatsSink(options, SinkContext("d", 2.0, 8, http))
            try:
                await sink.deliver(Delivery("msg_0", b"{}", "a", 1, 0, "d"))
                assert sink._link is not None and sink._link.nc is not None
                stalled = sink._link.nc
                proxy.pause()
                fill = []
                while stalled._pending_data_size < 2_000_000:  # nats-py's max_pending_size
                    fill.append(asyncio.ensure_future(stalled.publish(f"{prefix}.fill", big)))
                    await asyncio.sleep(0)
                if listing:
                    sink._streams.forget()  # the attempt lists the streams first
                attempt = asyncio.ensure_future(
                    sink.deliver(Delivery("msg_1", big, "b", 1, 0, "d"))
                )
                asyncio.get_running_loop().call_later(2.0, attempt.cancel)  # the deadline
                done, _ = await asyncio.wait({attempt}, timeout=8)
                assert done == {attempt} and attempt.cancelled()  # the proxy still paused
                proxy.resume()  # (a paused proxy reads nothing, a close included)
                await eventually(_no_connection(proxy), what="the stalled connection closed")
                again = await asyncio.wait_for(
                    sink.deliver(Delivery("msg_1", big, "b", 2, 0, "d")), 10
                )
                assert again.body.startswith(f"stream {name} seq ".encode())
                assert proxy.accepted == 2
                for task in fill:
                    task.cancel()
            finally:
                await sink.aclose()


async def test_a_list_forgotten_as_it_arrives_still_names_the_stream(
    nc: NatsClient, stream: tuple[str, str]
) -> None:
    """Another attempt's refused PubAck makes the sink forget the stream
    list in the very turn a new list arrives: the attempt that waited for
    that list publishes to the stream it names, never to core NATS."""
    name, prefix = stream
    async with httpx.AsyncClient() as http:
        sink = NatsSink(sink_options(URL, prefix, "auto"), SinkContext("d", 5.0, 8, http))
        try:
            await sink.deliver(Delivery("msg_0", b"{}", "a", 1, 0, "d"))
            sink._streams.forget()
            attempt = asyncio.ensure_future(sink.deliver(Delivery("msg_1", b"{}", "b", 1, 0, "d")))
            for _ in range(100):  # the attempt starts the list within a few turns
                if sink._link is not None and sink._link.listing is not None:
                    break
                await asyncio.sleep(0)
            assert sink._link is not None and sink._link.listing is not None
            # Runs when the list arrives, before the waiting attempt resumes.
            sink._link.listing.add_done_callback(lambda _: sink._streams.forget())
            answer = await asyncio.wait_for(attempt, 10)
        finally:
            await sink.aclose()
    assert answer.body.startswith(f"stream {name} seq 2".encode()), answer.body

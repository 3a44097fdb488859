"""The amqp plugin (plugins/amqp, docs/amqp.md) against the machine's real
RabbitMQ: a real router posting over HTTP, a real consumer reading the
queue. Bytes as posted, the properties and headers, per-key order; an
unroutable message (no queue, no exchange) fails and is retried until the
queue exists, nothing lost; the broker's connection cut mid-stream (a TCP
proxy of the test's own: the machine's broker is shared) loses nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from router_amqp import AmqpOptions
from router_amqp.sink import AmqpSink

from router.plugin import Delivery, DeliveryFailed, SinkContext
from router.queue.keys import DestinationKeys
from tests.support.rabbitmq import RABBITMQ_PORT, RABBITMQ_URL, Rabbit, Received, rabbit_session
from tests.support.routes import STORE, write_routes
from tests.support.servers import wait_until
from tests.support.tcp_proxy import TcpProxy

DESTINATION = "rabbit"
KEYS = DestinationKeys(DESTINATION)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Quick to open and quick to probe: an outage in these tests lasts seconds.
BREAKER = {
    "failing_keys": 3,
    "window": "10s",
    "probe_interval": "200ms",
    "probe_interval_max": "400ms",
}


@pytest.fixture()
def rabbit() -> Iterator[Rabbit]:
    yield from rabbit_session()


def amqp_routes(path: Path, url: str = RABBITMQ_URL, **options: Any) -> Path:
    return write_routes(path, None, destination=DESTINATION, plugin="amqp", url=url, **options)


def by_key(received: list[Received]) -> dict[str, list[Received]]:
    keys: dict[str, list[Received]] = {}
    for r in received:
        keys.setdefault(r.key, []).append(r)
    return keys


def first_arrivals(received: list[Received]) -> list[Received]:
    """Each message once, where it first arrived: a publish whose confirm was
    lost with the connection may be in the queue twice (at least once)."""
    seen: set[str | None] = set()
    firsts = []
    for r in received:
        if r.message_id not in seen:
            seen.add(r.message_id)
            firsts.append(r)
    return firsts


def test_messages_arrive_as_posted_with_their_properties_in_order_per_key(
    start_router, rabbit: Rabbit, tmp_path: Path
) -> None:
    queue = rabbit.declare_queue(rabbit.name())
    got = rabbit.consume(queue)
    router = start_router("", routes_file=amqp_routes(tmp_path / "r.yaml", routing_key=queue))
    posted: dict[str, list[bytes]] = {}
    for i in range(10):
        for key in ("1", "2", "3"):
            # Spacing, key order and escapes as the sender wrote them.
            body = f'{{ "wa_id":"{key}",  "mensaje": "n\\u00famero {i}" }}'.encode()
            headers = {"content-type": "application/json"}
            if i == 0:
                headers |= {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"}
            assert router.post(body, headers=headers).status_code == 200
            posted.setdefault(key, []).append(body)

    wait_until(lambda: len(got) >= 30, what="30 messages in the queue")
    assert len(got) == 30
    for key, messages in by_key(got).items():
        assert [m.body for m in messages] == posted[key]
        assert [m.headers["x-router-sequence"] for m in messages] == list(range(1, 11))
        assert {m.attempt for m in messages} == {1}
        assert messages[0].headers["traceparent"] == TRACEPARENT
        assert messages[0].headers["tracestate"] == "rojo=00f067aa0ba902b7"
        assert all("traceparent" not in m.headers for m in messages[1:])
    assert len({m.message_id for m in got}) == 30
    for m in got:
        assert m.message_id is not None and m.message_id.startswith("msg_")
        assert m.content_type == "application/json"
        assert m.delivery_mode == 2  # persistent
        assert m.routing_key == queue
        assert m.app_id == "message-router"


def test_an_exchange_routes_by_the_key_in_the_routing_key(
    start_router, rabbit: Rabbit, tmp_path: Path
) -> None:
    exchange = rabbit.declare_exchange(rabbit.name("x"), "direct")
    queues = {key: rabbit.declare_queue(rabbit.name()) for key in ("a", "b")}
    got = {}
    for key, queue in queues.items():
        rabbit.bind(queue, exchange, f"conv.{key}")
        got[key] = rabbit.consume(queue)
    routes = amqp_routes(tmp_path / "r.yaml", exchange=exchange, routing_key="conv.{key}")
    router = start_router("", routes_file=routes)
    for i in range(5):
        for key in ("a", "b"):
            assert router.post({"mensaje": f"{key}{i}", "wa_id": key}).status_code == 200
    wait_until(lambda: len(got["a"]) + len(got["b"]) >= 10, what="10 messages")
    for key in ("a", "b"):
        assert [m.body for m in got[key]] == [
            f'{{"mensaje":"{key}{i}","wa_id":"{key}"}}'.encode() for i in range(5)
        ]
        assert {m.routing_key for m in got[key]} == {f"conv.{key}"}


def test_a_missing_queue_fails_attempts_until_it_is_declared(
    start_router, rabbit: Rabbit, redis: Redis, tmp_path: Path
) -> None:
    """Unroutable (mandatory, no queue bound): every attempt fails and is
    retried; the breaker counts it (the broker's side, not the message's);
    once the queue exists everything arrives, in order, once."""
    queue = rabbit.name()  # not declared yet
    routes = amqp_routes(tmp_path / "r.yaml", routing_key=queue, circuit_breaker=BREAKER)
    router = start_router("", routes_file=routes)
    keys = [str(k) for k in range(4)]
    for i in range(5):
        for key in keys:
            assert router.post({"mensaje": f"{key}-{i}", "wa_id": key}).status_code == 200

    wait_until(lambda: redis.hget(KEYS.health, "state") == b"down", what="the breaker to open")
    errors = {k: v.decode() for k, v in redis.hgetall(KEYS.last_error).items()}
    assert errors and all("unroutable" in e and "312 NO_ROUTE" in e for e in errors.values())

    rabbit.declare_queue(queue)
    got = rabbit.consume(queue)
    wait_until(lambda: len(got) >= 20, what="every message once the queue exists")
    assert len(got) == 20  # an unroutable message is not in the queue: no duplicate
    for key, messages in by_key(got).items():
        assert [m.body for m in messages] == [
            f'{{"mensaje":"{key}-{i}","wa_id":"{key}"}}'.encode() for i in range(5)
        ]
    assert max(m.attempt for m in got) >= 2
    wait_until(lambda: redis.hgetall(KEYS.health) == {}, what="the breaker to close")


def test_a_missing_exchange_fails_attempts_until_it_is_declared(
    start_router, rabbit: Rabbit, redis: Redis, tmp_path: Path
) -> None:
    exchange = rabbit.name("x")  # not declared yet
    queue = rabbit.declare_queue(rabbit.name())
    got = rabbit.consume(queue)
    routes = amqp_routes(
        tmp_path / "r.yaml", exchange=exchange, routing_key=queue, circuit_breaker=BREAKER
    )
    router = start_router("", routes_file=routes)
    for i in range(3):
        assert router.post({"mensaje": f"m{i}", "wa_id": "7"}).status_code == 200
    wait_until(
        lambda: b"does not exist" in (redis.hget(KEYS.last_error, "7") or b""),
        what="a failed attempt for the missing exchange",
    )
    rabbit.declare_exchange(exchange, "direct")
    rabbit.bind(queue, exchange, queue)
    wait_until(lambda: len(got) >= 3, what="the messages once the exchange exists")
    assert [m.body for m in got] == [f'{{"mensaje":"m{i}","wa_id":"7"}}'.encode() for i in range(3)]


def test_a_broker_outage_mid_stream_loses_nothing_and_keeps_the_order(
    start_router, rabbit: Rabbit, redis: Redis, tmp_path: Path
) -> None:
    """Every connection cut and new ones refused while messages flow (a
    broker restart, played by a proxy), then the broker back: every message
    arrives, each key in order; only a retried message may arrive twice."""
    queue = rabbit.declare_queue(rabbit.name())
    got = rabbit.consume(queue)
    with TcpProxy("127.0.0.1", RABBITMQ_PORT) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        routes = amqp_routes(tmp_path / "r.yaml", url, routing_key=queue, circuit_breaker=BREAKER)
        router = start_router("", routes_file=routes)
        keys = [str(k) for k in range(5)]
        total = 200
        posted: dict[str, list[bytes]] = {k: [] for k in keys}

        def post_all() -> None:
            with httpx.Client() as client:
                for i in range(total):
                    key = keys[i % len(keys)]
                    body = f'{{"mensaje":"{key}-{i}","wa_id":"{key}"}}'.encode()
                    r = client.post(router.url + STORE, content=body)
                    assert r.status_code == 200
                    posted[key].append(body)

        poster = threading.Thread(target=post_all)
        poster.start()
        try:
            wait_until(lambda: len(got) >= 30, what="the first messages")
            assert proxy.down() >= 1  # the router's connection, mid-stream
            wait_until(
                lambda: redis.hlen(KEYS.last_error) > 0, what="an attempt to fail in the outage"
            )
            proxy.up()
        finally:
            poster.join(60)
        wait_until(lambda: len(first_arrivals(got)) >= total, timeout=60, what="every message")
        firsts = first_arrivals(got)
        assert len(firsts) == total
        for key, messages in by_key(firsts).items():
            assert [m.body for m in messages] == posted[key]
        # A message twice only if its first publish lost its confirm: a retry.
        seen: set[str | None] = set()
        for r in got:
            assert r.message_id not in seen or r.attempt >= 2, r
            seen.add(r.message_id)
        assert max(r.attempt for r in got) >= 2
        assert proxy.accepted >= 2  # reconnected


async def test_the_sink_reuses_one_connection_and_closes_it(rabbit: Rabbit) -> None:
    queue = rabbit.declare_queue(rabbit.name())
    with TcpProxy("127.0.0.1", RABBITMQ_PORT) as proxy:
        options = AmqpOptions(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/", routing_key=queue)
        async with httpx.AsyncClient() as http:
            context = SinkContext(destination="d", timeout=5.0, max_in_flight=4, http=http)
            sink = AmqpSink(options, context)
            for i in range(20):
                response = await sink.deliver(delivery(i))
                assert response.body == b"basic.ack"
            assert (proxy.accepted, proxy.live) == (1, 1)
            await sink.aclose()
        wait_until(lambda: proxy.live == 0, what="the connection to close")
    assert rabbit.message_count(queue) == 20


async def test_a_nack_fails_the_attempt(rabbit: Rabbit) -> None:
    """A queue that refuses publishes when full answers basic.nack."""
    queue = rabbit.declare_queue(
        rabbit.name(), **{"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    async with httpx.AsyncClient() as http:
        context = SinkContext(destination="d", timeout=5.0, max_in_flight=1, http=http)
        sink = AmqpSink(AmqpOptions(url=RABBITMQ_URL, routing_key=queue), context)
        try:
            with pytest.raises(DeliveryFailed, match=r"basic\.nack") as info:
                await sink.deliver(delivery(0))
            assert info.value.message_fault is False and not info.value.permanent
        finally:
            await sink.aclose()


async def test_a_routing_key_too_long_for_amqp_gives_the_message_up() -> None:
    async with httpx.AsyncClient() as http:
        context = SinkContext(destination="d", timeout=5.0, max_in_flight=1, http=http)
        sink = AmqpSink(AmqpOptions(url=RABBITMQ_URL, routing_key="conv.{key}"), context)
        long_key = Delivery(
            id="m", body=b"{}", key="k" * 256, attempt=1, received_at_ms=0, destination="d"
        )
        with pytest.raises(DeliveryFailed, match="longer than AMQP allows") as info:
            await sink.deliver(long_key)
        assert info.value.permanent
        await sink.aclose()


def delivery(i: int) -> Delivery:
    return Delivery(
        id=f"msg_{i}",
        body=b'{"n": %d}' % i,
        key="k",
        attempt=1,
        received_at_ms=1_700_000_000_000,
        destination="d",
        sequence=i + 1,
    )

"""Delivery to MQTT (the mqtt plugin, docs/mqtt.md): `router worker --burst`
beside a plain aiomqtt client publishing the same messages with the same
MQTT 5 user properties at QoS 1, each publish waiting for its PUBACK, at
most `in_flight` at once (bench/broker_common.py).

    .venv/bin/python bench/broker_mqtt.py -n 200      # this part alone
    .venv/bin/python bench/run.py --only mqtt
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from broker_common import (
    BrokerCase,
    BrokerPart,
    message_body,
    plain_client_parser,
    run_alone_main,
)
from context import Context

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"
CASES = (BrokerCase(1000, 64, "QoS 1"), BrokerCase(1, 1, "QoS 1"))


class MqttPart(BrokerPart):
    def __init__(self, ctx: Context, cases: tuple[BrokerCase, ...] = CASES) -> None:
        super().__init__(ctx, name="MQTT", host=HOST, port=PORT, cases=cases)

    def settings(self, case: BrokerCase, prefix: str) -> str:
        return f"    plugin: mqtt\n    url: {URL}\n    topic: '{prefix}/{{key}}'\n    qos: 1\n"

    async def subscribe(
        self, prefix: str, on_message: Callable[[], None], subscribed: asyncio.Event
    ) -> None:
        import aiomqtt

        async with aiomqtt.Client(HOST, PORT, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(f"{prefix}/#", qos=0)
            subscribed.set()
            async for _ in client.messages:
                on_message()

    def client_argv(self, case: BrokerCase, prefix: str, n: int) -> list[str]:
        argv = [sys.executable, "bench/broker_mqtt.py", "--client", "--prefix", prefix]
        return [*argv, "-n", str(n), "--keys", str(case.keys), "--in-flight", str(case.in_flight)]

    def note(self) -> str:
        return (
            "Plain client: aiomqtt alone (MQTT 5), one connection, `in_flight` tasks each "
            "publishing the next message at QoS 1 (the router's body and user properties) and "
            "waiting for its PUBACK; no Redis, no per-key order. The router reads the messages "
            "from Redis, publishes them through the mqtt plugin one at a time per wa_id, and "
            "acknowledges each in Redis. The rate is taken at a QoS 0 subscriber of the topics."
        )


async def plain_client(args: argparse.Namespace) -> None:
    """The floor: publish the bench's messages as the plugin does, no Redis."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = aiomqtt.Client(
        HOST,
        PORT,
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=max(args.in_flight, 20),
        timeout=10,
    )
    next_i = iter(range(args.n))

    async def worker() -> None:
        for i in next_i:
            wa_id, body = message_body(i, args.keys)
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [
                ("x-router-id", f"msg_bench{i}"),
                ("x-router-attempt", "1"),
                ("x-router-key", wa_id),
                ("x-router-sequence", str(i // args.keys + 1)),
            ]
            await client.publish(f"{args.prefix}/{wa_id}", body, qos=1, properties=props)

    async with client:
        await asyncio.gather(*(worker() for _ in range(args.in_flight)))


def main() -> int:
    if "--client" in sys.argv:
        p = plain_client_parser()
        asyncio.run(plain_client(p.parse_args()))
        return 0
    return run_alone_main("mqtt", MqttPart, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

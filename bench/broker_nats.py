"""Delivery to NATS (the nats plugin, docs/nats.md): `router worker --burst`
beside a plain nats-py client publishing the same messages with the same
headers and ack, at most `in_flight` at once (bench/broker_common.py):

* JetStream (a stream on the subjects): each publish waits for its PubAck;
* core NATS (no stream): each publish is followed by a flush (PING/PONG),
  as the plugin acknowledges a core publish.

    .venv/bin/python bench/broker_nats.py -n 200      # this part alone
    .venv/bin/python bench/run.py --only nats
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

HOST, PORT = "127.0.0.1", 4222
URL = f"nats://{HOST}:{PORT}"
JETSTREAM, CORE = "JetStream", "core"
CASES = (
    BrokerCase(1000, 64, JETSTREAM),
    BrokerCase(1, 1, JETSTREAM),
    BrokerCase(1000, 64, CORE),
)


def stream_name(prefix: str) -> str:
    return f"BENCH_{prefix}"


async def _stream(prefix: str, create: bool) -> None:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(StreamConfig(name=stream_name(prefix), subjects=[f"{prefix}.>"]))
        else:
            await js.delete_stream(stream_name(prefix))
    finally:
        await nc.close()


class NatsPart(BrokerPart):
    def __init__(self, ctx: Context, cases: tuple[BrokerCase, ...] = CASES) -> None:
        super().__init__(ctx, name="NATS", host=HOST, port=PORT, cases=cases)

    def settings(self, case: BrokerCase, prefix: str) -> str:
        jetstream = "true" if case.variant == JETSTREAM else "false"
        return (
            f"    plugin: nats\n    url: {URL}\n    subject: '{prefix}.{{key}}'\n"
            f"    jetstream: {jetstream}\n"
        )

    async def subscribe(
        self, prefix: str, on_message: Callable[[], None], subscribed: asyncio.Event
    ) -> None:
        import nats

        nc = await nats.connect(URL, pending_size=256 * 1024 * 1024)

        async def count(_msg: object) -> None:
            on_message()

        try:
            await nc.subscribe(f"{prefix}.>", cb=count, pending_msgs_limit=-1)
            await nc.flush()
            subscribed.set()
            await asyncio.Event().wait()
        finally:
            await nc.close()

    def client_argv(self, case: BrokerCase, prefix: str, n: int) -> list[str]:
        argv = [sys.executable, "bench/broker_nats.py", "--client", "--prefix", prefix]
        argv += ["-n", str(n), "--keys", str(case.keys), "--in-flight", str(case.in_flight)]
        return argv + (["--jetstream"] if case.variant == JETSTREAM else [])

    def setup(self, case: BrokerCase, prefix: str) -> None:
        if case.variant == JETSTREAM:
            asyncio.run(_stream(prefix, create=True))

    def teardown(self, case: BrokerCase, prefix: str) -> None:
        if case.variant == JETSTREAM:
            asyncio.run(_stream(prefix, create=False))

    def note(self) -> str:
        return (
            "Plain client: nats-py alone, one connection, `in_flight` tasks each publishing "
            "the next message (the router's bodies and headers: Nats-Msg-Id, X-Router-Sequence, "
            "X-Router-Attempt, X-Router-Key) and waiting for its PubAck (JetStream) or a flush "
            "(core); no Redis, no per-key order. The router reads the messages from Redis, "
            "publishes them through the nats plugin one at a time per wa_id, and acknowledges "
            "each in Redis. Each case: a stream of its own (JetStream), created and deleted "
            "around the run; the rate is taken at a core subscriber of the subjects."
        )


async def plain_client(args: argparse.Namespace) -> None:
    """The floor: publish the bench's messages as the plugin does, no Redis."""
    import nats

    nc = await nats.connect(URL)
    js = nc.jetstream(timeout=10)
    next_i = iter(range(args.n))

    async def worker() -> None:
        for i in next_i:
            wa_id, body = message_body(i, args.keys)
            headers = {
                "Nats-Msg-Id": f"msg_bench{i}",
                "X-Router-Attempt": "1",
                "X-Router-Key": wa_id,
                "X-Router-Sequence": str(i // args.keys + 1),
            }
            subject = f"{args.prefix}.{wa_id}"
            if args.jetstream:
                await js.publish(subject, body, headers=headers)
            else:
                await nc.publish(subject, body, headers=headers)
                await nc.flush(timeout=10)

    try:
        await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    finally:
        await nc.close()


def main() -> int:
    if "--client" in sys.argv:
        p = plain_client_parser()
        p.add_argument("--jetstream", action="store_true")
        asyncio.run(plain_client(p.parse_args()))
        return 0
    return run_alone_main("nats", NatsPart, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

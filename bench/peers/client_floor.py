"""Delivery floors: how fast one process can POST the messages to the sink
with an HTTP client and nothing else (no Redis, no queue).

The same loop with httpx (the router's client API) and with aiohttp (what
moves the router's bytes by default, router/plugin/aiohttp_transport.py), C requests
in flight, so a delivery run can say how close it comes to its transport's
limit. Each POST is what the router's chatbot sink sends: the body as
stored (bytes, not re-encoded), content-type, accept-encoding identity, an
`Idempotency-Key` and `X-Router-Attempt`; the answer is read to its end.
Prints one line per client and C, which bench/delivery.py parses.

--loop auto (default) runs on uvloop when it is installed, as the router's
worker does (ROUTER_LOOP=auto), so that the floor and the router run on the
same event loop.

    python client_floor.py --sink http://127.0.0.1:8103/bot -n 5000 -c 1 64
"""

import argparse
import asyncio
import time

import aiohttp
import httpx
from loops import run


def messages(n):
    """(headers, body) per message, made before the clock starts."""
    for i in range(n):
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "Idempotency-Key": f"floor_{i:08d}",
            "X-Router-Attempt": "1",
        }
        yield headers, f'{{"mensaje":"m{i}","wa_id":"{i % 1000}"}}'.encode()


async def timed(name, post, n, c):
    """POST n messages through `post`, at most c at once; print the rate."""
    gate = asyncio.Semaphore(c)
    todo = list(messages(n))

    async def one(headers, body):
        async with gate:
            await post(headers, body)

    began = time.perf_counter()
    await asyncio.gather(*(one(h, b) for h, b in todo))
    print(f"{name} in_flight={c}: {n / (time.perf_counter() - began):.0f} msg/s", flush=True)


async def with_httpx(sink, n, c):
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits) as client:

        async def post(headers, body):
            (await client.post(sink, content=body, headers=headers)).raise_for_status()

        await timed("httpx", post, n, c)


async def with_aiohttp(sink, n, c):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def post(headers, body):
            async with session.post(sink, data=body, headers=headers) as response:
                response.raise_for_status()
                await response.read()

        await timed("aiohttp", post, n, c)


CLIENTS = {"httpx": with_httpx, "aiohttp": with_aiohttp}


async def main(args):
    for c in args.c:
        for client in args.clients:
            await CLIENTS[client](args.sink, args.n, c)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sink", default="http://127.0.0.1:8103/bot")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args()
    run(main(args), args.loop)

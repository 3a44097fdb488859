"""Delivery floors: how fast one process can POST the messages to the sink
with an HTTP client and nothing else (no Redis, no queue).

The same loop with httpx (the router's client) and with aiohttp, C requests
in flight, so a delivery run can say how close it comes to its transport's
limit. Prints one line per client and C, which bench/delivery.py parses.

    python client_floor.py --sink http://127.0.0.1:8103/bot -n 5000 -c 1 16
"""

import argparse
import asyncio
import time

import aiohttp
import httpx


async def timed(name, post, n, c):
    """POST n messages through `post`, at most c at once; print the rate."""
    gate = asyncio.Semaphore(c)

    async def one(i):
        async with gate:
            await post({"mensaje": f"m{i}", "wa_id": str(i % 1000)})

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"{name} in_flight={c}: {n / (time.perf_counter() - began):.0f} msg/s", flush=True)


async def with_httpx(sink, n, c):
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=c)) as client:

        async def post(message):
            (await client.post(sink, json=message)).raise_for_status()

        await timed("httpx", post, n, c)


async def with_aiohttp(sink, n, c):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def post(message):
            async with session.post(sink, json=message) as response:
                response.raise_for_status()
                await response.read()

        await timed("aiohttp", post, n, c)


async def main(args):
    for c in args.c:
        await with_httpx(args.sink, args.n, c)
        await with_aiohttp(args.sink, args.n, c)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sink", default="http://127.0.0.1:8103/bot")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", type=int, nargs="+", default=[1, 16])
    asyncio.run(main(parser.parse_args()))

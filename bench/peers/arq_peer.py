"""Delivery peer: arq, the asyncio job queue on Redis a Python team would pick
instead of the router, doing the same delivery job.

Enqueues N jobs (one {mensaje, wa_id} message each, wa_id = i % keys), then
drains them with an arq worker in burst mode: each job POSTs its message to
the sink and fails on a non-2xx answer. arq keeps no order per wa_id.
bench/delivery.py takes the rate at the sink; the figure printed here
includes the worker's start-up.

The POST goes through aiohttp by default (--client), what the router's
delivery uses under its httpx client, and the worker runs on uvloop when it
is installed (--loop auto), as the router does: arq is measured as a queue,
not handicapped by its HTTP client or event loop. --client httpx posts with
a plain httpx.AsyncClient as arq's users commonly do.

    python arq_peer.py --redis redis://127.0.0.1:6379/15 \
        --sink http://127.0.0.1:8103/bot -n 5000 --keys 1000 --max-jobs 64
"""

import argparse
import asyncio
import time

import aiohttp
import httpx
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from loops import run


async def deliver(ctx, sink, message):
    await ctx["post"](sink, message)


def starting(client, max_jobs):
    """arq's on_startup: open the HTTP client the jobs share."""

    async def startup(ctx):
        if client == "httpx":
            limits = httpx.Limits(max_connections=max_jobs, max_keepalive_connections=max_jobs)
            http = ctx["client"] = httpx.AsyncClient(limits=limits)

            async def post(sink, message):
                (await http.post(sink, json=message)).raise_for_status()

        else:
            connector = aiohttp.TCPConnector(limit=max_jobs)
            session = ctx["client"] = aiohttp.ClientSession(connector=connector)

            async def post(sink, message):
                async with session.post(sink, json=message) as response:
                    response.raise_for_status()
                    await response.read()

        ctx["post"] = post

    return startup


async def shutdown(ctx):
    client = ctx["client"]
    await (client.aclose() if isinstance(client, httpx.AsyncClient) else client.close())


async def main(args):
    settings = RedisSettings.from_dsn(args.redis)
    pool = await create_pool(settings)
    for start in range(0, args.n, 100):  # enqueue 100 at a time
        batch = range(start, min(args.n, start + 100))
        messages = [{"mensaje": f"m{i}", "wa_id": str(i % args.keys)} for i in batch]
        await asyncio.gather(*(pool.enqueue_job("deliver", args.sink, m) for m in messages))
    worker = Worker(
        functions=[deliver],
        redis_settings=settings,
        on_startup=starting(args.client, args.max_jobs),
        on_shutdown=shutdown,
        max_jobs=args.max_jobs,
        burst=True,  # exit once the queue is empty
        poll_delay=0.01,  # arq sleeps this long between polls of the queue
        keep_result=0,  # like the router, keep nothing once delivered
        handle_signals=False,
    )
    began = time.perf_counter()
    await worker.async_run()
    took = time.perf_counter() - began
    await worker.close()  # runs on_shutdown: the HTTP client is closed
    print(
        f"arq max_jobs={args.max_jobs} ({args.client}): {args.n} messages in {took:.2f} s = "
        f"{args.n / took:.0f} msg/s (complete={worker.jobs_complete} failed={worker.jobs_failed})"
    )
    await pool.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--sink", default="http://127.0.0.1:8103/bot")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--max-jobs", type=int, default=1)
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args()
    run(main(args), args.loop)

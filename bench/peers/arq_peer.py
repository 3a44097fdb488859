"""Delivery peer: arq, the asyncio job queue on Redis a Python team would pick
instead of the router, doing the same delivery job.

Enqueues N jobs (one {mensaje, wa_id} message each, wa_id = i % keys), then
drains them with an arq worker in burst mode: each job POSTs its message to
the sink with httpx (the router's own client) and fails on a non-2xx answer.
arq keeps no order per wa_id. bench/delivery.py takes the rate at the sink;
the figure printed here includes the worker's start-up.

    python arq_peer.py --redis redis://127.0.0.1:6379/15 \
        --sink http://127.0.0.1:8103/bot -n 5000 --keys 1000 --max-jobs 1
"""

import argparse
import asyncio
import time

import httpx
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker


async def deliver(ctx, sink, message):
    response = await ctx["client"].post(sink, json=message)
    response.raise_for_status()


async def startup(ctx):
    ctx["client"] = httpx.AsyncClient()


async def shutdown(ctx):
    await ctx["client"].aclose()


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
        on_startup=startup,
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
    print(
        f"arq max_jobs={args.max_jobs}: {args.n} messages in {took:.2f} s = "
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
    asyncio.run(main(parser.parse_args()))

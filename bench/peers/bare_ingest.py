"""Ingest floor and framework ceiling: the least a Litestar ingest can do.

/v1/store_message (the floor) validates {mensaje, wa_id} with msgspec and
RPUSHes the message to one Redis list; no routing, dedup, fan-out or lanes.
/v1/hello (the ceiling) validates the same body and touches no Redis at all.
`router api` is measured against both, on the same server stack
(bench/stack.py passes uvicorn the same --loop and --http):

    REDIS_URL=redis://127.0.0.1:6379/15 [BARE_POOL=wait] python -m uvicorn bare_ingest:app \
        --port 8101 --log-level warning --no-access-log
"""

import os

import msgspec
from litestar import Litestar, post
from redis.asyncio import BlockingConnectionPool, Redis

# The list bench/ingest.py counts to check every 200 was stored.
QUEUE = "peer:bare:queue"

# The Redis pool, BARE_POOL: "default" is redis-py's own (at most 100
# connections, raising past them; wrk's 32 connections never get there): the
# least a handler can do, the floor under wrk. "wait" waits for one of 100
# connections up to 2 s, as the router's pool does (ROUTER_REDIS_CONNECTIONS,
# ROUTER_INGEST_DEADLINE): the floor of the burst (bench/burst.py), where the
# default pool answers 500 past 100 requests in flight, and a pool without a
# cap opens a connection per request in flight, 2-3x slower at p99.
POOL = os.environ.get("BARE_POOL", "default")
URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
if POOL == "wait":
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(URL, max_connections=100, timeout=2)
    )
elif POOL == "default":
    redis = Redis.from_url(URL)
else:
    raise SystemExit(f"BARE_POOL={POOL!r}: allowed: default, wait")


class Message(msgspec.Struct):
    mensaje: str
    wa_id: str


@post("/v1/store_message", status_code=200)
async def store(data: Message) -> dict[str, str]:
    await redis.rpush(QUEUE, msgspec.json.encode(data))
    return {"status": "ok"}


@post("/v1/hello", status_code=200)
async def hello(data: Message) -> dict[str, str]:
    return {"status": "ok"}


app = Litestar([store, hello])

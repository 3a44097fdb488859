"""Ingest floor and framework ceiling: the least a Litestar ingest can do.

/v1/store_message (the floor) validates {mensaje, wa_id} with msgspec and
RPUSHes the message to one Redis list; no routing, dedup, fan-out or lanes.
/v1/hello (the ceiling) validates the same body and touches no Redis at all.
`router api` is measured against both, on the same server stack
(bench/stack.py passes uvicorn the same --loop and --http):

    REDIS_URL=redis://127.0.0.1:6379/15 python -m uvicorn bare_ingest:app \
        --port 8101 --log-level warning --no-access-log
"""

import os

import msgspec
from litestar import Litestar, post
from redis.asyncio import Redis

# The list bench/ingest.py counts to check every 200 was stored.
QUEUE = "peer:bare:queue"

redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))


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

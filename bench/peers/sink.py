"""The destination of every delivery run: a raw ASGI app that answers 200 to
any POST and counts them, so the sink is never what limits a contender.

GET /count answers how many POSTs it has taken, POST /reset sets that to 0;
bench/destination.py polls /count to take every contender's rate at the
same place. SINK_DELAY_MS (default 0) makes each answer wait, to play a bot
that thinks before it replies.

SINK_RECORD=1 also keeps, per message id (the `Idempotency-Key` header the
router sends), the wall-clock time (time.time()) the whole request had
arrived: GET /times answers {"times": {id: seconds}, "duplicates": n}, for
bench/latency.py to join with the times the ingest POSTs were answered (same
machine, same clock). A repeated id keeps its first time and counts as a
duplicate. Off by default, so the throughput runs' sink does no more than count.

    python -m uvicorn sink:app --port 8103 --log-level warning --no-access-log
"""

import asyncio
import json
import os
import time

DELAY = float(os.environ.get("SINK_DELAY_MS", "0")) / 1000
RECORD = os.environ.get("SINK_RECORD", "0") == "1"
ID_HEADER = b"idempotency-key"
count = 0
times: dict[str, float] = {}
duplicates = 0


def record(scope) -> None:
    global duplicates
    for name, value in scope["headers"]:
        if name == ID_HEADER:
            key = value.decode()
            if key in times:
                duplicates += 1
            else:
                times[key] = time.time()
            return


async def app(scope, receive, send):
    global count, duplicates
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    more = True
    while more:  # read (and drop) the whole body before answering
        more = (await receive()).get("more_body", False)
    if scope["path"] == "/count":
        body = str(count).encode()
    elif scope["path"] == "/reset":
        count, body = 0, b"0"
        times.clear()
        duplicates = 0
    elif scope["path"] == "/times":
        body = json.dumps({"times": times, "duplicates": duplicates}).encode()
    else:
        if RECORD:
            record(scope)
        if DELAY:
            await asyncio.sleep(DELAY)
        count += 1
        body = b'{"status":200}'
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The destination of every delivery run: a raw ASGI app that answers 200 to
any POST and counts them, so the sink is never what limits a contender.

GET /count answers how many POSTs it has taken, POST /reset sets that to 0;
bench/destination.py polls /count to take every contender's rate at the
same place. SINK_DELAY_MS (default 0) makes each answer wait, to play a bot
that thinks before it replies.

    python -m uvicorn sink:app --port 8103 --log-level warning --no-access-log
"""

import asyncio
import os

DELAY = float(os.environ.get("SINK_DELAY_MS", "0")) / 1000
count = 0


async def app(scope, receive, send):
    global count
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    more = True
    while more:  # read (and drop) the whole body before answering
        more = (await receive()).get("more_body", False)
    if scope["path"] == "/count":
        body = str(count).encode()
    elif scope["path"] == "/reset":
        count, body = 0, b"0"
    else:
        if DELAY:
            await asyncio.sleep(DELAY)
        count += 1
        body = b'{"status":200}'
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

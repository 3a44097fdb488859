"""`router trace ID` and `router messages DEST` as real processes, over the
stories a running router (in a thread, with its workers) wrote delivering
to a real HTTP destination: a readable story and table, `--json` the admin
API's objects, one-line errors."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from tests.support.bot import Answer, Bot
from tests.support.processes import run_cli
from tests.support.routes import write_routes
from tests.support.servers import serve, wait_until

FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}
WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\S+ ago\)")


def _delivered(redis_url: str, message_id: str) -> bool:
    async def read() -> bool:
        redis = Redis.from_url(redis_url)
        try:
            found = await ShardedQueue(redis, Scripts(redis), "chatbot").story(message_id)
            return found is not None and found.state == "delivered"
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_trace_and_messages(tmp_path: Path, bot: Bot, clean_redis: str) -> None:
    def decide(message: dict[str, Any], n: int) -> Answer:
        if message["mensaje"] == "flaky" and n == 0:
            return Answer(status=503, body={"error": "warming up\nline two"})
        return Answer(body={"status": "ok", "reply": "hola"})

    bot.decide = decide
    routes = write_routes(
        tmp_path / "routes.yaml", bot.url, retry=FAST_RETRY, circuit_breaker={"enabled": False}
    )
    ids = []
    with serve(clean_redis, routes, run_workers=True) as router:
        for key, text in [("a", "flaky"), ("b", "one"), ("a", "two")]:
            ids.append(_post(router.url, key, text))
            wait_until(lambda: _delivered(clean_redis, ids[-1]), what=f"{text} delivered")

    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli("--routes", str(routes), *args, REDIS_URL=clean_redis)
        return done.returncode, done.stdout, done.stderr

    # The story: per destination a line, then one per attempt, its answer under it.
    code, out, err = cli("trace", ids[0])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"message {ids[0]}"
    head = next(line for line in lines if line.startswith("chatbot:"))
    assert "DELIVERED" in head and "key a" in head and "seq 1" in head and WHEN.search(head)
    first = next(line for line in lines if line.lstrip().startswith("#1"))
    assert first.split()[1:3] == ["failed", "503"] and "HTTP 503" in first and WHEN.search(first)
    answer = lines[lines.index(first) + 1]
    assert answer.lstrip().startswith("answer:") and "warming up\\nline two" in answer
    second = next(line for line in lines if line.lstrip().startswith("#2"))
    assert second.split()[1:3] == ["ok", "200"]

    # --json: GET /admin/messages/{id}'s object.
    code, out, err = cli("trace", ids[0], "--json")
    assert code == 0, err
    story = json.loads(out)
    assert story["id"] == ids[0]
    delivery = story["deliveries"]["chatbot"]
    assert (delivery["state"], delivery["key"], delivery["seq"]) == ("delivered", "a", 1)
    assert [(a["attempt"], a["outcome"], a["status"]) for a in delivery["attempts"]] == [
        (1, "failed", 503),
        (2, "ok", 200),
    ]

    # No such message: one line, exit 1 (nothing found; not a mistake).
    code, out, err = cli("trace", "msg_nothing")
    assert (code, out) == (1, "")
    assert err == "router trace: no destination's message log has a message 'msg_nothing'\n"

    # A destination's messages: a table, newest first; filters; --json.
    code, out, err = cli("messages", "chatbot")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in ([i] for i in ids)]
    assert [r[0] for r in rows] == ids[::-1]
    assert rows[-1][1:3] == ["a", "delivered"] and rows[-1][-1] == "2"
    code, out, err = cli("messages", "chatbot", "--key", "a", "--json")
    assert code == 0, err
    assert [m["id"] for m in json.loads(out)["messages"]] == [ids[2], ids[0]]
    code, out, err = cli("messages", "chatbot", "--failed", "--since", "1h", "--json")
    assert code == 0, err
    [found] = json.loads(out)["messages"]
    assert (found["id"], found["attempts"], found["state"]) == (ids[0], 2, "delivered")
    code, out, err = cli("messages", "chatbot", "--limit", "1", "--json")
    assert code == 0, err
    assert [m["id"] for m in json.loads(out)["messages"]] == [ids[2]]
    code, out, err = cli("messages", "chatbot", "--key", "nobody")
    assert (code, out) == (0, "no logged messages in chatbot match\n")

    # Bad input: one line, exit 2.
    code, _, err = cli("messages", "chatbot", "--since", "yesterday")
    assert code == 2 and len(err.splitlines()) == 1 and "--since 'yesterday'" in err
    code, _, err = cli("messages", "nobody")
    assert code == 2 and err.startswith("router messages: no destination named 'nobody'")
    code, _, err = cli("messages", "chatbot", "--limit", "0")
    assert code == 2 and "--limit: 0 is not from 1 to 1000" in err


def _post(url: str, key: str, text: str) -> str:
    r = httpx.post(url + "/v1/store_message", json={"mensaje": text, "wa_id": key})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])

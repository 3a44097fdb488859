"""`router dead list`, `router dead blocked` and `router unroutable list` as
a real process: tables to read by default (local times with their age,
errors cut to a width), `--json` lines for scripts, as before."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from router.plugin.formats import SkippedItem
from router.queue import envelope
from router.queue.scripts import Scripts
from router.queue.unroutable import UnroutableStore
from router.redis import mode as redis_mode
from tests.support.bot import Bot
from tests.support.processes import run_cli
from tests.support.queues import ERROR, build_queue
from tests.support.routes import write_routes

# A local date and time, then the age: `2026-12-06 04:18:24 (3.2s ago)`.
WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\S+ ago\)")


def test_dead_letters_blocked_keys_and_unroutable_items_are_tables_unless_json(
    tmp_path: Path, bot: Bot, clean_redis: str
) -> None:
    ids = build_queue(clean_redis, "chatbot", dead={"u": ["d1"]}, blocked={"p": ["p1", "p2"]})
    routes = str(write_routes(tmp_path / "routes.yaml", bot.url))

    def cli(*args: str) -> tuple[int, str, str]:
        done = run_cli("--routes", routes, *args, REDIS_URL=clean_redis)
        return done.returncode, done.stdout, done.stderr

    # Dead letters: key, message id, attempts, dead since, error (cut).
    code, out, err = cli("dead", "list", "chatbot")
    assert code == 0, err
    row = next(line for line in out.splitlines() if ids["d1"] in line)
    assert row.split()[:3] == ["u", ids["d1"], "1"]
    assert WHEN.search(row) and ERROR[:60] in row and "dead_at" not in out
    assert max(len(line) for line in out.splitlines()) < 200
    code, out, err = cli("dead", "list", "chatbot", "--json")
    assert code == 0, err
    [letter] = [json.loads(line) for line in out.splitlines()]
    assert (letter["key"], letter["envelope"]["id"]) == ("u", ids["d1"])
    assert letter["error"] == ERROR and letter["dead_at"] > 0
    # Stored without its ts (the id carries it), printed with it, as before.
    assert list(letter["envelope"])[:3] == ["id", "ts", "body"]
    assert letter["envelope"]["ts"] == envelope.id_ms(ids["d1"])

    # Blocked keys: key, attempts, blocked since, error.
    code, out, err = cli("dead", "blocked", "chatbot")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.split()[:1] == ["p"])
    assert row.split()[1] == "1" and WHEN.search(row) and "HTTP 500" in row
    assert "blocked_at" not in out
    code, out, err = cli("dead", "blocked", "chatbot", "--json")
    assert code == 0, err
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert entry["key"] == "p" and entry["error"] == ERROR and entry["blocked_at"] > 0

    # Unroutable items: when, reason, problem, the item.
    _keep_unroutable(clean_redis)
    code, out, err = cli("unroutable", "list", "/webhooks/whatsapp")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "message.from" in line)
    assert WHEN.search(row) and "wamid.1" in row and '"at"' not in out
    code, out, err = cli("unroutable", "list", "/webhooks/whatsapp", "--json")
    assert code == 0, err
    [item] = [json.loads(line) for line in out.splitlines()]
    assert item["reason"] == "message.from" and item["at"] > 0

    # Nothing to show: one line that says so, never an empty frame.
    code, out, _ = cli("unroutable", "list", "/nothing-kept")
    assert code == 0 and out == "no unroutable items kept for /nothing-kept\n"
    code, out, _ = cli("dead", "purge", "chatbot")
    code, out, _ = cli("dead", "list", "chatbot")
    assert code == 0 and out == "no dead letters in chatbot\n"
    code, out, _ = cli("dead", "list", "chatbot", "--json")
    assert code == 0 and out == ""


def _keep_unroutable(url: str) -> None:
    """One item kept as the WhatsApp format keeps one it cannot route."""

    async def keep() -> None:
        client = await redis_mode.open_client(url)
        try:
            store = UnroutableStore(Scripts(client), "/webhooks/whatsapp")
            item = SkippedItem("message.from", "messages[0].from is empty", {"id": "wamid.1"})
            await store.keep([item], 60)
        finally:
            await client.aclose()

    asyncio.run(keep())

"""One conversation's controls end to end (router pause/resume DEST KEY,
router skip DEST KEY, the admin API's conversations/... endpoints, the
dashboard's forms): the real app with its workers, a real Redis, a real
HTTP destination on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync

from router.queue.keys import DestinationKeys, all_shards, operator_log_key, shard_of
from tests.support.bot import Answer, Bot
from tests.support.processes import run_cli
from tests.support.routes import STORE, write_routes
from tests.support.servers import serve, wait_until

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = "/admin/destinations/chatbot"


def post(url: str, mensaje: str, key: str) -> None:
    r = httpx.post(url + STORE, json={"mensaje": mensaje, "wa_id": key}, timeout=10)
    assert r.status_code == 200, r.text


def admin(url: str, action: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}{ADMIN}/conversations/{action}", json={"key": key}, headers=AUTH)


def key_state(url: str, key: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}{ADMIN}/key", params={"key": key}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def operator_entries(client: redis_sync.Redis, action: str) -> list[dict[str, str]]:
    entries = client.xrange(operator_log_key())
    decoded = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [e for e in decoded if e.get("action") == action]


def test_a_paused_conversation_is_held_while_the_others_deliver_then_goes_on_in_order(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url, shards=2)
    held = "44-held/with %2F and spaces"  # any key: it travels in a JSON body
    with serve(clean_redis, routes, run_workers=True, admin_token=TOKEN) as server:
        paused = admin(server.url, "pause", held)
        assert paused.json() == {"status": "ok", "key": held, "paused": True, "changed": True}
        assert admin(server.url, "pause", held).json()["changed"] is False
        for i in range(3):
            post(server.url, f"h{i}", held)
        for i in range(3):
            post(server.url, f"o{i}", "other")
        wait_until(lambda: bot.acked_messages("other") == ["o0", "o1", "o2"], what="others")
        # Its turn came (it was first in line) and a claim parked it.
        wait_until(lambda: key_state(server.url, held)["state"] == "paused", what="parked")
        assert [r for r in bot.received if r.body["wa_id"] == held] == []
        state = key_state(server.url, held)
        assert (state["messages"], state["paused"]) == (3, True)
        figures = httpx.get(server.url + "/admin/destinations", headers=AUTH).json()["chatbot"]
        assert (figures["paused_conversations"], figures["paused"]) == (1, False)
        listed = httpx.get(f"{server.url}{ADMIN}/conversations/paused", headers=AUTH).json()
        assert [(p["key"], p["parked"]) for p in listed["paused"]] == [(held, True)]
        # Pausing and resuming the destination leaves the conversation paused.
        httpx.post(f"{server.url}{ADMIN}/pause", headers=AUTH)
        httpx.post(f"{server.url}{ADMIN}/resume", headers=AUTH)
        post(server.url, "o3", "other")
        wait_until(lambda: "o3" in bot.acked_messages("other"), what="o3")
        assert [r for r in bot.received if r.body["wa_id"] == held] == []
        resumed = admin(server.url, "resume", held)
        assert resumed.json() == {"status": "ok", "key": held, "paused": False, "changed": True}
        wait_until(lambda: len(bot.acked_messages(held)) == 3, what="the held conversation")
        assert bot.acked_messages(held) == ["h0", "h1", "h2"]
        seqs = [r.headers.get("x-router-sequence") for r in bot.received if r.body["wa_id"] == held]
        assert seqs == ["1", "2", "3"]
        assert admin(server.url, "resume", held).json()["changed"] is False
        client = redis_sync.Redis.from_url(clean_redis)
        try:
            shard = DestinationKeys("chatbot", shard_of(held, 2), 2)
            assert client.hlen(shard.paused_keys) == 0
            # The conversation's two, then the destination's.
            pauses = operator_entries(client, "pause")
            assert [e["result"] for e in pauses] == ["paused", "already paused", "paused"]
            assert held[:20] in pauses[0]["scope"]
        finally:
            client.close()


def test_a_paused_conversation_stays_paused_across_a_worker_restart(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url, shards=2)
    done = run_cli("--routes", str(routes), "pause", "chatbot", "k1", REDIS_URL=clean_redis)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("conversation 'k1' of chatbot paused")
    with serve(clean_redis, routes, run_workers=True) as server:
        post(server.url, "a0", "k1")
        post(server.url, "a1", "k1")
        post(server.url, "b0", "k2")
        wait_until(lambda: bot.acked_messages("k2") == ["b0"], what="b0")
    with serve(clean_redis, routes, run_workers=True) as server:  # a restart
        post(server.url, "b1", "k2")
        wait_until(lambda: bot.acked_messages("k2") == ["b0", "b1"], what="b1")
        assert bot.acked_messages("k1") == []
        status = run_cli(
            "--routes", str(routes), "status", "chatbot", "--json", REDIS_URL=clean_redis
        )
        assert status.returncode == 0, status.stderr
        figures = json.loads(status.stdout)["chatbot"]
        assert figures["paused_keys"] == 1
        assert [p["key"] for p in figures["paused_conversations"]] == ["k1"]
        table = run_cli("--routes", str(routes), "status", "chatbot", REDIS_URL=clean_redis)
        assert "1 conversation(s) paused" in table.stdout, table.stdout
        assert "k1" in table.stdout.split("conversations of chatbot paused")[1], table.stdout
        done = run_cli("--routes", str(routes), "resume", "chatbot", "k1", REDIS_URL=clean_redis)
        assert done.returncode == 0, done.stderr
        assert "conversation 'k1' of chatbot resumed" in done.stdout
        wait_until(lambda: bot.acked_messages("k1") == ["a0", "a1"], what="k1 after resume")
    again = run_cli("--routes", str(routes), "resume", "chatbot", "k1", REDIS_URL=clean_redis)
    assert again.returncode == 0 and "was not paused" in again.stdout


def test_skipping_a_failing_head_lets_the_next_ones_through_in_order(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    bot.decide = lambda m, n: Answer(500, {"status": "error"}) if m["mensaje"] == "a0" else Answer()
    routes = write_routes(tmp_path / "routes.yaml", bot.url, shards=2)
    with serve(clean_redis, routes, run_workers=True, admin_token=TOKEN) as server:
        for text in ("a0", "a1", "a2"):
            post(server.url, text, "k1")
        wait_until(lambda: len(bot.attempts_of("a0")) >= 2, what="a0 failing")
        skipped = admin(server.url, "skip", "k1")
        assert skipped.status_code == 200, skipped.text
        answer = skipped.json()
        assert (answer["key"], answer["seq"], answer["left"]) == ("k1", 1, 2)
        assert answer["was"] in ("waiting", "in flight", "ready")
        wait_until(lambda: bot.acked_messages("k1") == ["a1", "a2"], what="the next ones")
        dead = httpx.get(f"{server.url}{ADMIN}/dead", headers=AUTH).json()["dead"]
        assert len(dead) == 1
        assert (dead[0]["key"], dead[0]["seq"]) == ("k1", 1)
        assert json.loads(dead[0]["envelope"])["id"] == answer["skipped_id"]
        assert dead[0]["error"].startswith("skipped by an operator")
        # Its story: the failed attempts, then the skip; dead.
        story = httpx.get(f"{server.url}/admin/messages/{answer['skipped_id']}", headers=AUTH)
        delivery = story.json()["deliveries"]["chatbot"]
        outcomes = [a["outcome"] for a in delivery["attempts"]]
        assert delivery["state"] == "dead"
        assert outcomes[-1] == "skipped" and set(outcomes[:-1]) == {"failed"}, outcomes
        assert delivery["attempts"][-1]["error"].startswith("skipped by an operator")
        # Nothing left to skip: a 404 naming it.
        nothing = admin(server.url, "skip", "k1")
        assert nothing.status_code == 404
        assert nothing.json()["error"] == "conversation 'k1' of chatbot has no message to skip"
        client = redis_sync.Redis.from_url(clean_redis)
        try:
            [entry] = operator_entries(client, "skip")
            assert entry["subject"] == "chatbot" and answer["skipped_id"] in entry["result"]
            assert entry["source"].startswith("admin ")
        finally:
            client.close()


def test_a_skip_fences_out_the_attempt_in_flight(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    """The skipped head's attempt still runs to its end at the bot, but its
    outcome changes nothing: it is not acknowledged nor tried again, and the
    next message goes."""
    bot.decide = lambda m, n: Answer(delay=3.0) if m["mensaje"] == "a0" else Answer()
    routes = write_routes(tmp_path / "routes.yaml", bot.url, timeout="20s", lease="30s")
    with serve(clean_redis, routes, run_workers=True, admin_token=TOKEN) as server:
        for text in ("a0", "a1"):
            post(server.url, text, "k1")
        wait_until(lambda: len(bot.attempts_of("a0")) == 1, what="a0 in flight")
        skipped = admin(server.url, "skip", "k1").json()
        assert (skipped["was"], skipped["seq"], skipped["left"]) == ("in flight", 1, 1)
        wait_until(lambda: bot.acked_messages("k1") == ["a0", "a1"], what="both answered")
        client = redis_sync.Redis.from_url(clean_redis)
        try:
            keys = DestinationKeys("chatbot")
            # The fenced attempt's ack was refused: one message acknowledged.
            wait_until(lambda: client.hget(keys.counts, "acked") == b"1", what="a1's ack")
            assert client.hget(keys.counts, "messages") == b"0"
            assert client.llen(keys.lane("k1")) == 0 and client.llen(keys.dead) == 1
        finally:
            client.close()
        assert len(bot.attempts_of("a0")) == 1  # never tried again
        # The fenced attempt wrote nothing to the story: it ends with the skip.
        story = httpx.get(f"{server.url}/admin/messages/{skipped['skipped_id']}", headers=AUTH)
        delivery = story.json()["deliveries"]["chatbot"]
        assert delivery["state"] == "dead"
        assert [a["outcome"] for a in delivery["attempts"]] == ["skipped"]


def test_the_commands_on_one_conversation_with_shards(clean_redis: str, tmp_path: Path) -> None:
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=3)
    client = redis_sync.Redis.from_url(clean_redis)

    def cli(*args: str) -> Any:
        return run_cli("--routes", str(routes), *args, REDIS_URL=clean_redis)

    try:
        with serve(clean_redis, routes) as server:  # ingest only: nothing is attempted
            post(server.url, "x0", "k/1")
            post(server.url, "x1", "k/1")
        done = cli("pause", "chatbot", "k/1")
        assert done.returncode == 0, done.stderr
        paused = [k for k in all_shards("chatbot", 3) if client.hexists(k.paused_keys, "k/1")]
        assert paused == [DestinationKeys("chatbot", shard_of("k/1", 3), 3)]
        assert "was already paused" in cli("pause", "chatbot", "k/1").stdout
        done = cli("skip", "chatbot", "k/1")
        assert done.returncode == 0, done.stderr
        assert "(sequence number 1)" in done.stdout and "1 message(s) left" in done.stdout
        assert cli("status", "chatbot", "k/1").stdout.count("paused by an operator") == 1
        done = cli("skip", "chatbot", "k/1")
        assert done.returncode == 0, done.stderr
        nothing = cli("skip", "chatbot", "k/1")
        assert nothing.returncode == 2
        assert nothing.stderr.strip() == (
            "router skip: conversation 'k/1' of chatbot has no message to skip"
        )
        unknown = cli("skip", "nope", "k/1")
        assert unknown.returncode == 2
        assert (
            unknown.stderr.strip() == "router skip: no destination named 'nope'; defined: chatbot"
        )
        assert cli("resume", "chatbot", "k/1").returncode == 0
        assert not any(client.exists(k.paused_keys) for k in all_shards("chatbot", 3))
        skips = operator_entries(client, "skip")
        assert [e["source"].split()[0] for e in skips] == ["cli", "cli"]
    finally:
        client.close()


def test_the_admin_endpoints_refuse_what_they_cannot_do(clean_redis: str, tmp_path: Path) -> None:
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    with serve(clean_redis, routes, admin_token=TOKEN) as server:
        for action in ("pause", "resume", "skip"):
            url = f"{server.url}{ADMIN}/conversations/{action}"
            unauthorized = httpx.post(url, json={"key": "k"})
            assert unauthorized.status_code == 401
            assert unauthorized.headers["www-authenticate"] == "Bearer"
            nope = httpx.post(
                f"{server.url}/admin/destinations/nope/conversations/{action}",
                json={"key": "k"},
                headers=AUTH,
            )
            assert nope.status_code == 404
            assert nope.json()["error"] == "no destination named 'nope'"
            for bad in (b"", b"{}", b'{"key": 1}', b'{"keys": ["k"]}', b"not json"):
                answer = httpx.post(url, content=bad, headers=AUTH)
                assert answer.status_code == 400, (action, bad)
                assert answer.json()["error"].startswith('send a JSON body {"key"'), answer.text
        listed = f"{server.url}{ADMIN}/conversations/paused"
        assert httpx.get(listed).status_code == 401
        assert httpx.get(listed, headers=AUTH).json() == {"paused": []}
        assert (
            httpx.get(
                "/".join([server.url, "admin/destinations/nope/conversations/paused"]), headers=AUTH
            ).status_code
            == 404
        )


def test_the_dashboard_pauses_skips_and_resumes_one_conversation(
    clean_redis: str, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    with serve(clean_redis, routes, admin_token=TOKEN) as server:
        post(server.url, "x0", "k<1>")
        post(server.url, "x1", "k<1>")
        with httpx.Client(base_url=server.url, timeout=10) as ui:
            login = ui.post("/ui/login", data={"token": TOKEN, "next": "/ui"})
            assert login.status_code == 303
            page = "/ui/destinations/chatbot"
            answer = ui.post(f"{page}/conversations/pause", data={"key": "k<1>"})
            assert answer.status_code == 303
            assert answer.headers["location"] == f"{page}?done=key-paused"
            shown = ui.get(answer.headers["location"]).text
            assert "Conversation paused" in shown
            assert 'data-paused-key="k&lt;1&gt;"' in shown  # listed, escaped
            answer = ui.post(f"{page}/conversations/skip", data={"key": "k<1>"})
            assert answer.headers["location"] == f"{page}?done=skipped&n=1"
            assert "(sequence number 1)" in ui.get(answer.headers["location"]).text
            answer = ui.post(f"{page}/conversations/resume", data={"key": "k<1>"})
            assert answer.headers["location"] == f"{page}?done=key-resumed"
            assert "No paused conversations." in ui.get(answer.headers["location"]).text
            answer = ui.post(f"{page}/conversations/resume", data={"key": "k<1>"})
            assert answer.headers["location"] == f"{page}?done=key-not-paused"
            answer = ui.post(f"{page}/conversations/skip", data={"key": "nobody"})
            assert answer.headers["location"] == f"{page}?done=nothing-to-skip"
            assert ui.post(f"{page}/conversations/pause", data={}).status_code == 400
            # A form from another site changes nothing.
            forged = ui.post(
                f"{page}/conversations/pause",
                data={"key": "k<1>"},
                headers={"origin": "https://evil.example"},
            )
            assert forged.status_code == 403
        client = redis_sync.Redis.from_url(clean_redis)
        try:
            assert client.hlen(DestinationKeys("chatbot").paused_keys) == 0
            assert [e["source"].split()[0] for e in operator_entries(client, "skip")] == ["ui"]
        finally:
            client.close()

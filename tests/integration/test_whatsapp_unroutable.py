"""Nothing answered 200 is dropped (issue 18): WhatsApp users with a
username (business-scoped user ids, BSUIDs: `"from": ""` and
`from_user_id`) are routed by their BSUID, and an item the router cannot
route inside a good, signed webhook is kept where an operator sees it
(`router status`, the dashboard, /admin/unroutable), can replay it and
purge it. Real router, real Redis-compatible server, real loopback bot;
payloads shaped as in Meta's BSUID documentation (docs/whatsapp.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.plugin.formats import SkippedItem
from router.queue.keys import RouteKeys
from router.queue.scripts import Scripts
from router.queue.unroutable import UnroutableStore
from router.redis.embedded import EmbeddedRedis
from tests.integration.test_whatsapp import ROUTES, lane, post
from tests.support.bot import Bot
from tests.support.processes import run_cli
from tests.support.routes import write_yaml
from tests.support.servers import serve, wait_until
from tests.support.whatsapp import PATH, envelope, status, text, value

TOKEN = "admin-token-for-unroutable-tests"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
BSUID = "US.13491208655302741918"  # Meta's example: country code, '.', digits
PHONE = "447700900001"


def routes(tmp_path: Path, bot_url: str = "http://127.0.0.1:9/bot") -> Path:
    return write_yaml(tmp_path, ROUTES.format(statuses="receipts", bot_url=bot_url))


def username_message(wamid: str, body: str, phone: str = "") -> dict[str, Any]:
    """A text from a user with a username: Meta withholds the phone (`from`
    empty) and sends the BSUID in `from_user_id`."""
    return {
        "from": phone,
        "from_user_id": BSUID,
        "id": wamid,
        "timestamp": "1775000000",
        "type": "text",
        "text": {"body": body},
    }


def username_value(messages: list[dict[str, Any]]) -> dict[str, Any]:
    v = value(messages)
    # A username user's contact: `user_id` (the BSUID) and the username, no wa_id.
    v["contacts"] = [{"profile": {"name": "Ana", "username": "@ana"}, "user_id": BSUID}]
    return v


def no_sender(wamid: str) -> dict[str, Any]:
    """A message with neither a phone nor a BSUID: not routable by any version."""
    m = text(PHONE, wamid, "nobody sent this")
    m["from"] = ""
    return m


def test_a_username_users_message_reaches_the_bot_keyed_by_bsuid(
    clean_redis: str, tmp_path: Path, bot: Bot
) -> None:
    with serve(clean_redis, routes(tmp_path, bot.url), run_workers=True) as server:
        payload = envelope(
            [
                username_value(
                    [
                        username_message("wamid.U1", "hola"),
                        # Both present (a user Meta still shows the phone of): the phone.
                        username_message("wamid.P1", "por tel", phone=PHONE),
                    ]
                )
            ]
        )
        r = post(server.url, payload)
        assert r.status_code == 200, r.text
        assert r.json()["skipped"] == 0 and len(r.json()["messages"]) == 2
        wait_until(lambda: len(bot.acked_messages()) >= 2, what="both messages delivered")
    assert bot.acked_messages(BSUID) == ["hola"]
    assert bot.acked_messages(PHONE) == ["por tel"]
    delivered = next(r.body for r in bot.acknowledged() if r.body.get("mensaje") == "hola")
    # The body keeps its shape: wa_id holds the key used, Meta's fields stay.
    assert delivered["wa_id"] == BSUID
    assert delivered["from"] == "" and delivered["from_user_id"] == BSUID
    assert delivered["profile_name"] == "Ana"


def test_a_username_users_status_is_ordered_by_recipient_user_id(
    clean_redis: str, tmp_path: Path, redis: Redis
) -> None:
    receipt = status("wamid.OUT1", "delivered", "")
    receipt["recipient_user_id"] = BSUID
    with serve(clean_redis, routes(tmp_path)) as server:
        r = post(server.url, envelope([value(statuses=[receipt])]))
    assert r.status_code == 200, r.text
    assert r.json()["skipped"] == 0
    assert [s["recipient_user_id"] for s in lane(redis, "receipts", BSUID)] == [BSUID]


def test_a_malformed_item_is_kept_shown_listed_and_purged(
    clean_redis: str, tmp_path: Path, redis: Redis
) -> None:
    file = routes(tmp_path)
    broken_status = {"status": "read", "recipient_id": PHONE}  # no id
    payload = envelope([value([text(PHONE, "wamid.G1", "ok"), no_sender("wamid.X1")])])
    payload["entry"][0]["changes"].append(
        {"field": "messages", "value": value(statuses=[broken_status])}
    )
    with serve(clean_redis, file, admin_token=TOKEN) as server:
        r = post(server.url, payload)
        assert r.status_code == 200, r.text
        assert r.json()["skipped"] == 2
        # Meta's redelivery of the same webhook keeps each item once.
        assert post(server.url, payload).status_code == 200
        counts = httpx.get(server.url + "/admin/unroutable", headers=ADMIN).json()
        assert counts == {PATH: {"kept": 2, "trimmed": 0}}
        listed = httpx.get(
            server.url + "/admin/unroutable/items", params={"route": PATH}, headers=ADMIN
        ).json()["items"]
        assert [i["item"] for i in listed] == [no_sender("wamid.X1"), broken_status]
        assert [i["reason"] for i in listed] == ["message.from", "status.id"]
        assert all(i["route"] == PATH and i["at"] > 0 for i in listed)
        assert "messages[1].from must be a non-empty string" in listed[0]["problem"]
        page = httpx.get(server.url + "/ui", headers=ADMIN)
        assert page.status_code == 200
        assert "Unroutable items" in page.text and PATH in page.text
        shown = run_cli("--routes", str(file), "status", REDIS_URL=clean_redis)
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if PATH in line)
        assert row.split()[-2:] == ["2", "0"]
        cli_list = run_cli(
            "--routes", str(file), "unroutable", "list", PATH, "--json", REDIS_URL=clean_redis
        )
        assert [json.loads(line)["reason"] for line in cli_list.stdout.splitlines()] == [
            "message.from",
            "status.id",
        ]
        one = httpx.post(
            server.url + "/admin/unroutable/purge",
            params={"route": PATH, "count": 1},
            headers=ADMIN,
        )
        assert one.json() == {"status": "ok", "purged": 1}
        left = httpx.get(
            server.url + "/admin/unroutable/items", params={"route": PATH}, headers=ADMIN
        ).json()["items"]
        assert [i["reason"] for i in left] == ["status.id"]
        # A count of 0 is refused, not read as "all" (LRANGE 0 -1).
        for action in ("list", "replay", "purge"):
            zero = run_cli(
                "--routes", str(file), "unroutable", action, PATH, "--count", "0",
                REDIS_URL=clean_redis,
            )  # fmt: skip
            assert zero.returncode == 2 and "at least 1" in zero.stderr, zero
        purged = run_cli("--routes", str(file), "unroutable", "purge", PATH, REDIS_URL=clean_redis)
        assert purged.returncode == 0 and "purged 1" in purged.stdout
        assert httpx.get(server.url + "/admin/unroutable", headers=ADMIN).json() == {
            PATH: {"kept": 0, "trimmed": 0}
        }
    assert [m["mensaje"] for m in lane(redis, "chatbot", PHONE)] == ["ok"]


def keep_as_an_older_version_did(redis_url: str, item: dict[str, Any]) -> None:
    """What a router that did not know BSUIDs kept: the item skipped as
    `message.from`, with the request carrying only it (as this version
    keeps items, through the same store)."""
    alone = json.dumps(envelope([username_value([item])])).encode()
    problem = "messages[0].from must be a non-empty string"
    skipped = SkippedItem("message.from", problem, item, alone)

    async def keep() -> None:
        client = AsyncRedis.from_url(redis_url)
        try:
            await UnroutableStore(Scripts(client), PATH).keep([skipped], 3600)
        finally:
            await client.aclose()

    asyncio.run(keep())


def test_replay_delivers_what_the_router_now_understands_and_keeps_the_rest(
    clean_redis: str, tmp_path: Path, bot: Bot
) -> None:
    file = routes(tmp_path, bot.url)
    keep_as_an_older_version_did(clean_redis, username_message("wamid.OLD1", "de antes"))
    with serve(clean_redis, file, admin_token=TOKEN, run_workers=True) as server:
        assert post(server.url, envelope([value([no_sender("wamid.X2")])])).status_code == 200
        assert httpx.get(server.url + "/admin/unroutable", headers=ADMIN).json() == {
            PATH: {"kept": 2, "trimmed": 0}
        }
        r = httpx.post(
            server.url + "/admin/unroutable/replay", params={"route": PATH}, headers=ADMIN
        )
        assert r.json() == {"status": "ok", "replayed": 1, "still_unroutable": 1}
        wait_until(lambda: bot.acked_messages(BSUID) == ["de antes"], what="the replayed message")
        left = httpx.get(
            server.url + "/admin/unroutable/items", params={"route": PATH}, headers=ADMIN
        ).json()["items"]
        assert [i["item"]["id"] for i in left] == ["wamid.X2"]
        nowhere = httpx.post(
            server.url + "/admin/unroutable/replay", params={"route": "/nowhere"}, headers=ADMIN
        )
        assert nowhere.status_code == 404 and "/nowhere" in nowhere.json()["error"]
        # Replayed again (from the CLI): nothing more to route, nothing delivered twice.
        again = run_cli("--routes", str(file), "unroutable", "replay", PATH, REDIS_URL=clean_redis)
        assert again.returncode == 0, again.stderr
        assert "replayed 0" in again.stdout and "1 still not routable" in again.stdout
    assert bot.acked_messages(BSUID) == ["de antes"]
    assert bot.acknowledged()[0].body["wa_id"] == BSUID


def test_when_keeping_an_item_fails_the_webhook_gets_no_200(
    clean_redis: str, tmp_path: Path, redis: Redis
) -> None:
    """Meta redelivers only what got no 200: an item that could not be kept
    must not be answered 200 (and the redelivery keeps it)."""
    payload = envelope([value([text(PHONE, "wamid.G2", "ok"), no_sender("wamid.X3")])])
    kept = RouteKeys(PATH).unroutable
    redis.set(kept, "not a list")  # every write to the list is refused (WRONGTYPE)
    with serve(clean_redis, routes(tmp_path), admin_token=TOKEN) as server:
        r = post(server.url, payload)
        assert r.status_code == 503, r.text
        assert r.json()["stored"] == "no"
        redis.delete(kept)
        # Kept before the messages: nothing is stored, no item marked as kept.
        assert lane(redis, "chatbot", PHONE) == []
        assert list(redis.scan_iter(match="*unroutable:seen:*")) == []
        redelivered = post(server.url, payload)
        assert redelivered.status_code == 200, redelivered.text
        assert httpx.get(server.url + "/admin/unroutable", headers=ADMIN).json() == {
            PATH: {"kept": 1, "trimmed": 0}
        }
    assert [m["mensaje"] for m in lane(redis, "chatbot", PHONE)] == ["ok"]


def test_many_bad_items_keep_bytes_in_proportion_to_the_request(
    clean_redis: str, tmp_path: Path, redis: Redis
) -> None:
    """300 malformed items beside 300 contacts in one webhook: each kept
    item's replay body carries its own contact only, so what is kept grows
    with the request, not with its square (before: every item's body copied
    all 300 contacts)."""
    file = routes(tmp_path)
    bad = [no_sender(f"wamid.B{i}") for i in range(300)]
    v = value(bad)
    v["contacts"] = [
        {"profile": {"name": f"user {i}"}, "wa_id": f"4477{i:08d}"} for i in range(300)
    ]
    payload = envelope([v])
    with serve(clean_redis, file) as server:
        r = post(server.url, payload)
        assert r.status_code == 200, r.text
        assert r.json()["skipped"] == 300
    kept = sum(len(e) for e in redis.lrange(RouteKeys(PATH).unroutable, 0, -1))
    sent = len(json.dumps(payload))
    # About 4x (each entry holds its item twice: as it came and in its
    # replay body, plus the reason); before, about 100x.
    assert kept < 10 * sent, (kept, sent)


def test_with_redis_wait_a_kept_item_is_answered_200_only_once_replicated(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """ROUTER_REDIS_WAIT=1 and no replica: a webhook holding only a
    malformed item is not answered 200 (Meta redelivers it), as a message's
    write is not, since no replica holds the kept item (before: kept on the
    primary alone and answered 200, lost if it failed over at once)."""
    server = serve(own_redis.url, routes(tmp_path), redis_wait=1, ingest_deadline=0.5)
    try:
        r = post(server.url, envelope([value([no_sender("wamid.W1")])]))
        assert r.status_code == 503, r.text
    finally:
        server.stop()


def test_replaying_a_route_without_a_format_is_one_line_not_a_traceback(
    clean_redis: str, tmp_path: Path
) -> None:
    file = write_yaml(
        tmp_path,
        """
        routes:
          - path: /v1/plain
            destinations: [chatbot]
        destinations:
          chatbot:
            plugin: http
            url: http://127.0.0.1:9/bot
        """,
    )
    argv = ("--routes", str(file), "unroutable", "replay", "/v1/plain")
    done = run_cli(*argv, REDIS_URL=clean_redis)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "router unroutable: route /v1/plain has no `format:`: nothing to replay "
        "(only a format route keeps unroutable items)"
    ]

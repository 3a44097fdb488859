"""Content routing (docs/content-routing.md) through the real app, a real
Redis-compatible server and real HTTP destinations: images only for the
media service, text only for the bot, everything for analytics, each in
order per key; nested ordering keys; a message matching nothing accepted
(and counted) or refused (422, nothing stored); a message stored for all
its matching destinations or none; the same on a WhatsApp format route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from router.queue.envelope import decode
from router.queue.keys import DestinationKeys
from tests.integration.test_metrics import scrape, value
from tests.integration.test_whatsapp import envelope, image, signed, text
from tests.integration.test_whatsapp import value as wa_value
from tests.support.bot import Bot, serving_bot
from tests.support.messages import assert_refused, stored_keys
from tests.support.routes import write_yaml
from tests.support.servers import serve, wait_until


def validate(doc: Any) -> None:
    """openapi_spec_validator's validate, imported at the first call: every
    parallel pytest worker collects this file, few run these tests (0.2 s
    of CPU each)."""
    from openapi_spec_validator import validate as validate_openapi

    validate_openapi(doc)


ROUTES = """
routes:
  - path: /v1/messages                # the docs' example
    destinations:
      - name: media
        when: {{path: message.type, equals: image}}
      - name: bot
        when:
          all:
            - {{path: message.type, equals: text}}
            - not: {{path: message.from, prefix: "4400"}}
      - analytics
  - path: /v1/lenient                 # every destination filtered: a message may match none
    destinations:
      - {{name: media, when: {{path: message.type, equals: image}}}}
      - {{name: bot, when: {{path: message.type, in: [text]}}}}
  - path: /v1/strict
    on_no_match: reject
    destinations:
      - {{name: media, when: {{path: message.type, equals: image}}}}
      - {{name: bot, when: {{path: message.type, equals: text}}}}
  - path: /webhooks/whatsapp
    format: whatsapp
    format_options: {{verify_token: verify-me, app_secret: app-secret-123}}
    destinations:
      - {{name: media, when: {{path: type, equals: image}}}}
      - {{name: bot, when: {{path: type, equals: text}}}}
      - {{name: analytics, when: {{not: {{path: type, equals: reaction}}}}}}
destinations:
  media:
    plugin: http
    url: {media}
    ordering_key: message.from
    timeout: 2s
    lease: 5s
  bot:
    plugin: http
    url: {bot}
    ordering_key: message.from
    timeout: 2s
    lease: 5s
  analytics:
    plugin: http
    url: {analytics}
    timeout: 2s
    lease: 5s
"""

NOWHERE = "http://127.0.0.1:9/"


def routes(
    tmp_path: Path, media: str = NOWHERE, bot: str = NOWHERE, analytics: str = NOWHERE
) -> Path:
    return write_yaml(tmp_path, ROUTES.format(media=media, bot=bot, analytics=analytics))


def msg(kind: str, sender: str, n: int) -> dict[str, Any]:
    return {"message": {"type": kind, "from": sender, "n": n}}


def lanes(redis: Redis, destination: str) -> dict[str, list[dict[str, Any]]]:
    """Every lane of a destination: ordering key -> bodies, oldest first."""
    prefix = DestinationKeys(destination).lane_prefix
    out = {}
    for k in redis.scan_iter(match=prefix + "*"):
        raw = redis.lrange(k, 0, -1)
        out[k.decode().removeprefix(prefix)] = [json.loads(bytes(decode(r).body)) for r in raw]
    return out


def nothing_stored(redis: Redis) -> bool:
    return [k for k in stored_keys(redis) if not k.endswith(b":counts")] == []


@pytest.fixture()
def api(clean_redis: str, tmp_path: Path) -> Iterator[str]:
    """The API only (no delivery): what is stored is what Redis holds."""
    with serve(clean_redis, routes(tmp_path)) as server:
        yield server.url


def test_images_to_media_text_to_the_bot_everything_to_analytics_in_order(
    clean_redis: str, tmp_path: Path
) -> None:
    with serving_bot() as media, serving_bot() as bot, serving_bot() as analytics:
        file = routes(tmp_path, media.url, bot.url, analytics.url)
        sent: list[dict[str, Any]] = []
        with serve(clean_redis, file, run_workers=True) as server:
            kinds = ["text", "image", "text", "sticker", "image", "text"]
            for n in range(24):
                sender = ["4477001", "4477002", "4400999"][n % 3]  # 4400...: not for the bot
                m = msg(kinds[n % len(kinds)], sender, n)
                r = httpx.post(server.url + "/v1/messages", json=m)
                assert r.status_code == 200, r.text
                expected = [
                    name
                    for name, wanted in (
                        ("media", m["message"]["type"] == "image"),
                        ("bot", m["message"]["type"] == "text" and sender != "4400999"),
                        ("analytics", True),
                    )
                    if wanted
                ]
                assert r.json()["destinations"] == expected, (m, r.json())
                assert r.json()["id"].startswith("msg_") and r.json()["duplicate"] is False
                sent.append(m)

            def got(b: Bot) -> list[dict[str, Any]]:
                return [r.body for r in b.acknowledged()]

            images = [m for m in sent if m["message"]["type"] == "image"]
            texts = [
                m
                for m in sent
                if m["message"]["type"] == "text" and m["message"]["from"] != "4400999"
            ]
            wait_until(
                lambda: (
                    len(got(media)) == len(images)
                    and len(got(bot)) == len(texts)
                    and len(got(analytics)) == len(sent)
                ),
                what="every destination to receive its messages",
            )
    # Each destination got exactly its messages, once each; in order per
    # sender (media, bot: ordering_key message.from), and in one global
    # order (analytics: no ordering key).
    for b, wanted in ((media, images), (bot, texts)):
        for sender in ("4477001", "4477002", "4400999"):
            mine = [m for m in wanted if m["message"]["from"] == sender]
            assert [m for m in got(b) if m["message"]["from"] == sender] == mine
        assert sorted(m["message"]["n"] for m in got(b)) == [m["message"]["n"] for m in wanted]
    assert got(analytics) == sent


def test_a_nested_ordering_key_names_the_lane(api: str, redis: Redis) -> None:
    for n, (kind, sender) in enumerate(
        [("image", "4477001"), ("text", "4477001"), ("image", "4477002"), ("image", "4477001")]
    ):
        assert httpx.post(api + "/v1/messages", json=msg(kind, sender, n)).status_code == 200
    media = lanes(redis, "media")
    assert {k: [m["message"]["n"] for m in v] for k, v in media.items()} == {
        "4477001": [0, 3],
        "4477002": [2],
    }
    assert {k: [m["message"]["n"] for m in v] for k, v in lanes(redis, "bot").items()} == {
        "4477001": [1]
    }
    assert [m["message"]["n"] for m in lanes(redis, "analytics")["*"]] == [0, 1, 2, 3]


def test_a_missing_ordering_key_refuses_only_where_it_is_needed(api: str, redis: Redis) -> None:
    # An image without message.from: media (it matches, and orders by it)
    # cannot take it: 400, stored nowhere, analytics included.
    r = httpx.post(api + "/v1/messages", json={"message": {"type": "image"}})
    assert_refused(r, 400, "missing field `message.from`", "ordering key of media")
    assert nothing_stored(redis)
    # A sticker without it matches only analytics, which has no ordering key.
    r = httpx.post(api + "/v1/messages", json={"message": {"type": "sticker"}})
    assert r.status_code == 200 and r.json()["destinations"] == ["analytics"], r.text
    assert list(lanes(redis, "analytics")) == ["*"]
    assert lanes(redis, "media") == {} and lanes(redis, "bot") == {}
    # The key's value keeps its rules: a nested object is not a key.
    r = httpx.post(api + "/v1/messages", json={"message": {"type": "text", "from": {"x": 1}}})
    assert_refused(r, 400, "field `message.from`", "non-empty string")


def test_no_match_is_accepted_and_counted(api: str, redis: Redis) -> None:
    before = value(scrape(api), "router_messages_unrouted_total", route="/v1/lenient")
    for n in range(3):
        r = httpx.post(api + "/v1/lenient", json=msg("sticker", "4477001", n))
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok", "id": None, "duplicate": False, "destinations": []}
    assert nothing_stored(redis)
    # A message that matches is stored, and not counted as unrouted.
    r = httpx.post(api + "/v1/lenient", json=msg("text", "4477001", 9))
    assert r.json()["destinations"] == ["bot"], r.text
    after = scrape(api)
    assert value(after, "router_messages_unrouted_total", route="/v1/lenient") == before + 3
    assert value(after, "router_ingest_requests_total", route="/v1/lenient", status="200") >= 4


def test_no_match_is_refused_with_422_on_a_rejecting_route(api: str, redis: Redis) -> None:
    before = value(scrape(api), "router_messages_unrouted_total", route="/v1/strict")
    r = httpx.post(api + "/v1/strict", json=msg("sticker", "4477001", 1))
    assert_refused(r, 422, "matches no destination", "on_no_match: reject")
    assert nothing_stored(redis)
    # Not counted as unrouted: it was refused, not accepted.
    assert value(scrape(api), "router_messages_unrouted_total", route="/v1/strict") == before
    # Invalid input is still a 400 first, and a match is stored.
    assert_refused(httpx.post(api + "/v1/strict", content=b"[]"), 400, "JSON object")
    r = httpx.post(api + "/v1/strict", json=msg("image", "4477001", 2))
    assert r.status_code == 200 and r.json()["destinations"] == ["media"], r.text


def test_a_message_is_stored_for_all_its_destinations_once_whatever_the_replays(
    api: str, redis: Redis
) -> None:
    body = msg("image", "4477001", 1)
    headers = {"Idempotency-Key": "order-7"}

    async def replays() -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(
                *(client.post(api + "/v1/messages", json=body, headers=headers) for _ in range(20))
            )

    answers = asyncio.run(replays())
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 19
    assert {tuple(r.json()["destinations"]) for r in answers} == {("media", "analytics")}
    # One copy at each matching destination, none elsewhere, under the one id.
    assert lanes(redis, "media") == {"4477001": [body]}
    assert lanes(redis, "analytics") == {"*": [body]}
    assert lanes(redis, "bot") == {}
    for name in ("media", "analytics"):
        marker = redis.get(DestinationKeys(name).seen("order-7"))
        assert marker is not None and marker.decode() == answers[0].json()["id"]
    # A message matching nothing leaves no dedup marker: its id stays free.
    r = httpx.post(
        api + "/v1/lenient", json=msg("sticker", "x", 1), headers={"Idempotency-Key": "k2"}
    )
    assert r.json()["id"] is None
    assert not [k for k in stored_keys(redis) if b"k2" in k]


def test_a_whatsapp_route_filters_each_message(api: str, redis: Redis) -> None:
    before = value(scrape(api), "router_messages_unrouted_total", route="/webhooks/whatsapp")
    reaction = {
        "from": "4477001",
        "id": "wamid.R1",
        "timestamp": "1700000003",
        "type": "reaction",
        "reaction": {"message_id": "wamid.T1", "emoji": "👍"},
    }
    payload = envelope(
        [
            wa_value(
                messages=[
                    text("4477001", "wamid.T1", "hello"),
                    image("4477001", "wamid.I1"),
                    reaction,
                ]
            )
        ]
    )
    raw = json.dumps(payload).encode()
    r = httpx.post(api + "/webhooks/whatsapp", content=raw, headers=signed(raw))
    assert r.status_code == 200, r.text
    answer = r.json()["messages"]
    assert [m["destinations"] for m in answer] == [["bot", "analytics"], ["media", "analytics"], []]
    assert answer[2]["id"] is None
    # Each destination holds what it matched, by wa_id (the format's key).
    assert [m["id"] for m in lanes(redis, "bot")["4477001"]] == ["wamid.T1"]
    assert [m["id"] for m in lanes(redis, "media")["4477001"]] == ["wamid.I1"]
    assert [m["id"] for m in lanes(redis, "analytics")["*"]] == ["wamid.T1", "wamid.I1"]
    after = value(scrape(api), "router_messages_unrouted_total", route="/webhooks/whatsapp")
    assert after == before + 1
    # Meta's redelivery: every stored message a duplicate, nothing stored again.
    again = httpx.post(api + "/webhooks/whatsapp", content=raw, headers=signed(raw)).json()
    assert [m["duplicate"] for m in again["messages"]] == [True, True, False]
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in answer]
    assert len(lanes(redis, "analytics")["*"]) == 2


def test_the_schema_describes_the_filtered_routes(api: str) -> None:
    doc = httpx.get(api + "/schema/openapi.json").json()
    validate(doc)
    strict = doc["paths"]["/v1/strict"]["post"]["responses"]
    lenient = doc["paths"]["/v1/lenient"]["post"]["responses"]
    assert "422" in strict and "422" not in lenient
    example = next(iter(strict["422"]["content"]["application/json"]["examples"].values()))
    assert "matches no destination" in example["value"]["error"]
    ok = lenient["200"]["content"]["application/json"]
    assert "destinations" in ok["schema"]["required"]
    unrouted = '{"status": "ok", "id": null, "duplicate": false, "destinations": []}'
    assert unrouted in lenient["200"]["description"]
    assert "router_messages_unrouted_total" not in strict["200"]["description"]
    # A format route's messages name their destinations too (id null: none).
    wa = doc["paths"]["/webhooks/whatsapp"]["post"]["responses"]["200"]["content"]
    item = wa["application/json"]["schema"]["properties"]["messages"]["items"]
    assert item["required"] == ["id", "duplicate", "destinations"]
    assert {"type": "null"} in item["properties"]["id"]["oneOf"]
    # The nested ordering key is no top-level field of the body.
    body = doc["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert "message.from" not in (body["schema"].get("properties") or {})
    assert "message.from" in body["schema"]["description"]


def test_refusals_name_the_message_and_the_field(
    clean_redis: str, tmp_path: Path, redis: Redis
) -> None:
    """A format route that rejects names the message at fault by its place in
    Meta's envelope (skipped items and statuses do not shift it); a dotted
    ordering key that misses, on a body holding that name as one top-level
    field, says how to name that field."""
    path = write_yaml(
        tmp_path,
        """\
        routes:
          - path: /wa
            format: whatsapp
            format_options: {verify_token: verify-me, app_secret: app-secret-123}
            on_no_match: reject
            destinations:
              - {name: media, when: {path: type, equals: image}}
          - path: /json
            destinations: [keyed]
        destinations:
          media: {plugin: http, url: "http://127.0.0.1:9/m"}
          keyed: {plugin: http, url: "http://127.0.0.1:9/k", ordering_key: user.id}
        """,
    )
    with serve(clean_redis, path, run_workers=False) as server:
        malformed = {"from": "4477001", "type": "text"}  # no id: skipped
        payload = envelope(
            [
                wa_value(
                    messages=[
                        malformed,
                        image("4477001", "wamid.I1"),
                        text("4477001", "wamid.T1", "hi"),
                    ]
                )
            ]
        )
        raw = json.dumps(payload).encode()
        r = httpx.post(server.url + "/wa", content=raw, headers=signed(raw))
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith("entry[0].changes[0].value.messages[2] matches no")
        assert nothing_stored(redis)

        r = httpx.post(server.url + "/json", json={"user.id": "u1"})
        assert r.status_code == 400
        assert "missing field `user.id`" in r.json()["error"]
        assert "`user\\.id` names this one" in r.json()["error"]
        assert httpx.post(server.url + "/json", json={"user": {"id": "u1"}}).status_code == 200

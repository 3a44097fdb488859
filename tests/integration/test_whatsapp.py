"""`format: whatsapp` (plugins/whatsapp): Meta's WhatsApp Cloud API webhook
taken as Meta sends it, against the real app and a real Redis-compatible
server. The payloads follow the shapes of Meta's webhook reference (text,
image, interactive reply, statuses; several messages and entries in one
POST); docs/whatsapp.md."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from router.queue.envelope import decode
from router.queue.keys import DestinationKeys, RouteKeys, unroutable_routes_key
from tests.support.bot import Bot
from tests.support.messages import assert_refused, stored_keys
from tests.support.routes import write_yaml
from tests.support.servers import ServerThread, serve, wait_until
from tests.support.whatsapp import (
    PATH,
    PHONE_ID,
    WABA,
    button_reply,
    envelope,
    image,
    signed,
    status,
    text,
    value,
)

TOKEN = "verify-me"

ROUTES = """
routes:
  - path: /webhooks/whatsapp
    format: whatsapp
    format_options:
      verify_token: verify-me
      app_secret: app-secret-123
      statuses: {statuses}
    destinations: [chatbot]
    dedup_ttl: 7d
destinations:
  chatbot:
    plugin: chatbot
    url: {bot_url}
    ordering_key: wa_id
    timeout: 2s
    lease: 5s
    retry: {{initial: 50ms, max_delay: 200ms}}
  receipts:
    plugin: http
    url: {bot_url}
    ordering_key: wa_id
    timeout: 2s
    lease: 5s
"""


def post(url: str, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if headers is None:
        headers = signed(body)
    return httpx.post(url + PATH, content=body, headers=headers)


def nothing_stored(redis: Redis) -> bool:
    """No message, dedup marker or ready key in any destination (a router
    writes each destination's counts when it starts)."""
    return [k for k in stored_keys(redis) if not k.endswith(b":counts")] == []


def lane(redis: Redis, destination: str, key: str) -> list[dict[str, Any]]:
    raw = redis.lrange(DestinationKeys(destination).lane(key), 0, -1)
    return [json.loads(bytes(decode(r).body)) for r in raw]


def lanes(redis: Redis, destination: str) -> dict[str, list[dict[str, Any]]]:
    prefix = DestinationKeys(destination).lane_prefix
    out = {}
    for k in redis.scan_iter(match=prefix + "*"):
        key = k.decode().removeprefix(prefix)
        out[key] = lane(redis, destination, key)
    return out


@pytest.fixture()
def routes(tmp_path: Path) -> Any:
    def write(statuses: str = "drop", bot_url: str = "http://127.0.0.1:9/bot") -> Path:
        return write_yaml(tmp_path, ROUTES.format(statuses=statuses, bot_url=bot_url))

    return write


@pytest.fixture()
def api(clean_redis: str, routes: Any) -> Iterator[str]:
    with serve(clean_redis, routes()) as server:
        yield server.url


@pytest.fixture()
def api_statuses(clean_redis: str, routes: Any) -> Iterator[str]:
    with serve(clean_redis, routes(statuses="receipts")) as server:
        yield server.url


# -- Meta's verification request ------------------------------------------------


def test_verification_answers_the_challenge_as_plain_text(api: str) -> None:
    r = httpx.get(
        api + PATH,
        params={"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": TOKEN},
    )
    assert r.status_code == 200, r.text
    assert r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "challenge",
    ["<script>alert(1)</script>", "<html>" + "A" * 60_000, "1" * 65, "12 34", "ünï", "1\n2"],
)
def test_a_challenge_that_is_not_a_short_token_is_refused_not_echoed(
    api: str, challenge: str
) -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": TOKEN}
    r = httpx.get(api + PATH, params=params)
    body = assert_refused(r, 400, "hub.challenge must be 1 to 64 letters, digits")
    assert challenge not in body["error"] and "<" not in r.text
    # The longest allowed one is answered.
    ok = httpx.get(api + PATH, params={**params, "hub.challenge": "9" * 64})
    assert ok.status_code == 200 and ok.text == "9" * 64


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": TOKEN},
        {"hub.challenge": "1", "hub.verify_token": TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
    ],
)
def test_verification_refused_is_403(api: str, params: dict[str, str]) -> None:
    r = httpx.get(api + PATH, params=params)
    assert_refused(r, 403, "verification refused")
    assert "1" not in r.json()["error"].split()


# -- the signature ---------------------------------------------------------------


def test_missing_or_wrong_signature_is_401_and_stores_nothing(api: str, redis: Redis) -> None:
    payload = envelope([value([text("447700900001", "wamid.A1", "Hola")])])
    body = json.dumps(payload).encode()
    assert_refused(post(api, body, {"Content-Type": "application/json"}), 401, "missing")
    assert_refused(post(api, body, signed(body, "another-secret")), 401, "does not match")
    tampered = body.replace(b"Hola", b"Hole")
    assert_refused(post(api, tampered, signed(body)), 401, "does not match")
    assert nothing_stored(redis)


# -- messages ---------------------------------------------------------------------


def test_text_image_and_interactive_are_each_a_message(api: str, redis: Redis) -> None:
    alice, bob = "447700900001", "447700900002"
    payload = envelope(
        [
            value(
                [text(alice, "wamid.A1", "Hola!"), image(alice, "wamid.A2")],
                contacts=[(alice, "Alice")],
            ),
            value([button_reply(bob, "wamid.B1")], contacts=[(bob, "Bob")]),
        ],
        [value([text(bob, "wamid.B2", "second entry"), text(alice, "wamid.A3", "otra")])],
    )
    r = post(api, payload)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "ok"
    assert [m["duplicate"] for m in answer["messages"]] == [False] * 5

    by_key = lanes(redis, "chatbot")
    assert set(by_key) == {alice, bob}
    a = by_key[alice]
    assert [m["id"] for m in a] == ["wamid.A1", "wamid.A2", "wamid.A3"]  # order kept per wa_id
    assert list(a[0])[:5] == ["mensaje", "wa_id", "id", "timestamp", "type"]
    assert a[0]["mensaje"] == "Hola!" and a[0]["wa_id"] == alice and a[0]["type"] == "text"
    assert a[0]["phone_number_id"] == PHONE_ID and a[0]["profile_name"] == "Alice"
    # Other types keep Meta's payload (with wa_id added).
    assert a[1]["image"] == image(alice, "wamid.A2")["image"] and "mensaje" not in a[1]
    assert a[1]["wa_id"] == alice
    b = by_key[bob]
    assert [m["id"] for m in b] == ["wamid.B1", "wamid.B2"]
    assert b[0]["interactive"]["button_reply"] == {"id": "cancel-button", "title": "Cancel"}
    assert b[0]["context"]["id"].startswith("wamid.")
    assert b[1]["mensaje"] == "second entry"


def test_a_redelivered_post_stores_nothing_new(api: str, redis: Redis) -> None:
    alice = "447700900001"
    first = envelope([value([text(alice, "wamid.A1", "uno"), text(alice, "wamid.A2", "dos")])])
    r1 = post(api, first)
    assert r1.status_code == 200
    # Meta redelivers the same webhook (no 200 seen): nothing stored again,
    # and the answer gives the ids stored the first time.
    r2 = post(api, first)
    assert r2.status_code == 200
    assert [m["duplicate"] for m in r2.json()["messages"]] == [True, True]
    assert [m["id"] for m in r2.json()["messages"]] == [m["id"] for m in r1.json()["messages"]]
    # A redelivery batched with a new message stores only the new one.
    again = envelope([value([text(alice, "wamid.A2", "dos"), text(alice, "wamid.A3", "tres")])])
    r3 = post(api, again)
    assert [m["duplicate"] for m in r3.json()["messages"]] == [True, False]
    assert [m["mensaje"] for m in lane(redis, "chatbot", alice)] == ["uno", "dos", "tres"]


def skipped_counts(url: str) -> dict[str, float]:
    """router_ingest_items_skipped_total of the WhatsApp route, by reason."""
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
        for s in family.samples
        if s.name == "router_ingest_items_skipped_total" and s.labels["route"] == PATH
    }


def test_a_malformed_item_is_skipped_and_the_rest_stored_together(
    api_statuses: str, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Meta redelivers a POST it got no 200 for, for days: one message it
    sent without an id (or a status without one) must not keep the good
    messages of the same POST out. They are stored (all of them, in one
    step), the answer is 200 naming the skipped items, each is logged once
    and counted by reason."""
    alice, bob = "447700900001", "447700900002"
    no_id = text(bob, "wamid.X", "no id")
    del no_id["id"]
    no_from = text(bob, "wamid.Y", "no from")
    del no_from["from"]
    payload = envelope(
        [value([text(alice, "wamid.A1", "uno")])],
        [
            value([text(bob, "wamid.B1", "dos"), no_id, no_from, "not an object"]),
            value(statuses=[status("wamid.OUT1", "sent", alice), {"status": "read"}]),
        ],
    )
    caplog.set_level(logging.WARNING, logger="router.api")
    before = skipped_counts(api_statuses)  # the counters are per process: other tests count too
    r = post(api_statuses, payload)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "ok" and answer["skipped"] == 4
    assert [m["duplicate"] for m in answer["messages"]] == [False, False, False]
    assert answer["problems"] == [
        "entry[1].changes[0].value.messages[1].id must be a non-empty string",
        "entry[1].changes[0].value.messages[2].from must be a non-empty string "
        "(or from_user_id, for a user with a username)",
        "entry[1].changes[0].value.messages[3] must be an object",
        "entry[1].changes[1].value.statuses[1].id must be a non-empty string",
    ]
    assert [m["mensaje"] for m in lane(redis, "chatbot", alice)] == ["uno"]
    assert [m["mensaje"] for m in lane(redis, "chatbot", bob)] == ["dos"]
    assert [s["id"] for s in lane(redis, "receipts", alice)] == ["wamid.OUT1"]
    skipped = [r for r in caplog.records if "skipped a malformed item" in r.getMessage()]
    assert [r.getMessage().rsplit(": ", 1)[1] for r in skipped] == answer["problems"]
    after = skipped_counts(api_statuses)
    counted = {reason: after[reason] - before.get(reason, 0) for reason in after}
    assert {r: n for r, n in counted.items() if n} == {
        "message.id": 1,
        "message.from": 1,
        "message": 1,
        "status.id": 1,
    }
    # Meta's redelivery (had it come) stores nothing again and skips the same.
    again = post(api_statuses, payload).json()
    assert [m["duplicate"] for m in again["messages"]] == [True, True, True]
    assert again["skipped"] == 4


def test_a_post_of_only_malformed_items_is_200_stores_no_message_and_keeps_the_item(
    api: str, redis: Redis
) -> None:
    broken = text("447700900001", "wamid.A1", "x")
    broken["text"] = "hi"
    r = post(api, envelope([value([broken])]))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ok",
        "messages": [],
        "skipped": 1,
        "problems": [
            "entry[0].changes[0].value.messages[0].text must be an object with a string body"
        ],
    }
    # No message for any destination; the item is kept for the operator
    # (router.queue.unroutable, tests/integration/test_whatsapp_unroutable.py).
    kept = RouteKeys(PATH)
    markers = list(redis.scan_iter(match="*unroutable:seen:*"))
    assert len(markers) == 1
    assert sorted(k for k in stored_keys(redis) if not k.endswith(b":counts")) == sorted(
        [unroutable_routes_key().encode(), kept.unroutable.encode(), *markers]
    )
    assert [json.loads(i)["item"] for i in redis.lrange(kept.unroutable, 0, -1)] == [broken]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"id": "wamid.1", "type": "text"}, "messages[0].from must be a non-empty string"),
        ({"from": "1", "id": "wamid.1"}, "messages[0].type must be a non-empty string"),
        ({"from": "1", "id": "wamid.1", "type": "text"}, "messages[0].text must be an object"),
        ({"from": "1", "id": "", "type": "image"}, "messages[0].id must be a non-empty string"),
        ({"from": "1" * 257, "id": "w.1", "type": "image"}, "from is longer than 256"),
    ],
)
def test_each_kind_of_malformed_message_is_named(api: str, item: Any, words: str) -> None:
    r = post(api, envelope([value([item, text("447700900001", "wamid.ok", "ok")])]))
    assert r.status_code == 200, r.text
    assert r.json()["skipped"] == 1 and words in r.json()["problems"][0]
    assert len(r.json()["messages"]) == 1


# -- statuses ------------------------------------------------------------------------


def test_statuses_are_dropped_by_default(api: str, redis: Redis) -> None:
    payload = envelope([value(statuses=[status("wamid.OUT1", "sent", "447700900001")])])
    r = post(api, payload)
    assert r.status_code == 200, r.text
    assert r.json()["messages"] == []
    assert nothing_stored(redis)


def test_statuses_go_to_their_own_destination(api_statuses: str, redis: Redis) -> None:
    alice = "447700900001"
    steps = [status("wamid.OUT1", s, alice) for s in ("sent", "delivered", "read")]
    steps.append(status("wamid.OUT2", "failed", alice))
    payload = envelope(
        [value([text(alice, "wamid.A1", "hola")]), value(statuses=steps)],
    )
    r = post(api_statuses, payload)
    assert r.status_code == 200, r.text
    assert [m["mensaje"] for m in lane(redis, "chatbot", alice)] == ["hola"]
    receipts = lane(redis, "receipts", alice)
    assert [(s["id"], s["status"]) for s in receipts] == [
        ("wamid.OUT1", "sent"),
        ("wamid.OUT1", "delivered"),
        ("wamid.OUT1", "read"),
        ("wamid.OUT2", "failed"),
    ]
    assert receipts[3]["errors"][0]["code"] == 131014
    assert receipts[0]["phone_number_id"] == PHONE_ID
    # Each status step is its own event; a redelivered one is a duplicate.
    r2 = post(api_statuses, envelope([value(statuses=steps[:2])]))
    assert [m["duplicate"] for m in r2.json()["messages"]] == [True, True]
    assert len(lane(redis, "receipts", alice)) == 4


# -- not a WhatsApp webhook at all (a malformed item is skipped: above) -----------


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"mensaje": "Hola!", "wa_id": "447700900001"}, ["`object`", "whatsapp_business_account"]),
        ({"object": "page", "entry": []}, ["`object`", '"page"']),
        ({"object": "whatsapp_business_account"}, ["body.entry", "array"]),
        ({"object": "whatsapp_business_account", "entry": {}}, ["body.entry", "array"]),
        ({"object": "whatsapp_business_account", "entry": [1]}, ["entry[0]", "object"]),
        (
            {"object": "whatsapp_business_account", "entry": [{"id": WABA}]},
            ["entry[0].changes", "array"],
        ),
        (envelope([value(messages="nope")]), ["value.messages", "array"]),  # type: ignore[arg-type]
        (envelope([value(statuses={})]), ["value.statuses", "array"]),  # type: ignore[arg-type]
        (
            {
                "object": "whatsapp_business_account",
                "entry": [{"changes": [{"field": "messages"}]}],
            },
            ["entry[0].changes[0].value", "object"],
        ),
        ([1, 2], ["JSON object"]),
        (b"{not json", ["invalid JSON"]),
        (b"", ["empty body"]),
    ],
)
def test_what_is_not_metas_envelope_is_4xx_naming_the_problem(
    api_statuses: str, redis: Redis, payload: Any, words: list[str]
) -> None:
    r = post(api_statuses, payload)
    assert_refused(r, 400, *words)
    assert nothing_stored(redis)


def test_changes_of_other_fields_are_ignored(api: str, redis: Redis) -> None:
    payload = envelope([value([text("447700900001", "wamid.A1", "hola")])])
    other = copy.deepcopy(payload["entry"][0])
    other["changes"] = [{"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]
    payload["entry"].insert(0, other)
    r = post(api, payload)
    assert r.status_code == 200, r.text
    assert len(r.json()["messages"]) == 1


def test_get_on_a_json_route_is_still_405(clean_redis: str, tmp_path: Path) -> None:
    routes = write_yaml(
        tmp_path,
        """
        routes:
          - {path: /v1/store_message, destinations: [chatbot]}
        destinations:
          chatbot: {plugin: chatbot, url: "http://127.0.0.1:9/bot"}
        """,
    )
    with serve(clean_redis, routes) as server:
        r = httpx.get(server.url + "/v1/store_message")
        assert_refused(r, 405, "method not allowed")
        assert "POST" in r.headers["allow"]


# -- delivered end to end ------------------------------------------------------------


def test_messages_reach_the_bot_in_order_per_wa_id(clean_redis: str, routes: Any, bot: Bot) -> None:
    alice, bob = "447700900001", "447700900002"
    sent = {alice: [f"a{i}" for i in range(6)], bob: [f"b{i}" for i in range(6)]}
    server: ServerThread = serve(clean_redis, routes(bot_url=bot.url), run_workers=True)
    try:
        for i in range(0, 6, 2):
            batch = [
                text(key, f"wamid.{key}.{j}", sent[key][j])
                for j in (i, i + 1)
                for key in (alice, bob)
            ]
            assert post(server.url, envelope([value(batch)])).status_code == 200
        wait_until(lambda: len(bot.acked_messages()) >= 12, what="12 messages delivered")
        assert bot.acked_messages(alice) == sent[alice]
        assert bot.acked_messages(bob) == sent[bob]
    finally:
        server.stop()

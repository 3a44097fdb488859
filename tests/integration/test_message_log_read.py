"""Reading the message log over HTTP: GET /admin/messages/{id}, GET
/admin/destinations/{name}/messages and the dashboard's message page,
search box and recent messages. Real Redis, the router's app under uvicorn
with its workers, a real HTTP destination on loopback. (The log itself:
test_message_log.py; `router trace` and `router messages`:
tests/process/test_message_log_cli.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.bot import Answer, Bot
from tests.support.routes import write_routes
from tests.support.servers import serve, wait_until

TOKEN = "trace-admin-token"
SECRET = "s3cr3t-bot-token-4471"
FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}


@dataclass
class Logged:
    """A router whose chatbot destination took three messages: `ids[0]`
    (key a) failed once, then was delivered; `ids[1]` (key b) and `ids[2]`
    (key a) were delivered at once. `cut`: a time between ids[1] and ids[2]."""

    api: httpx.Client
    ids: list[str]
    cut: int


def _post(client: httpx.Client, key: str, text: str) -> str:
    r = client.post("/v1/store_message", json={"mensaje": text, "wa_id": key})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _state(api: httpx.Client, message_id: str) -> str | None:
    r = api.get(f"/admin/messages/{message_id}")
    return r.json()["deliveries"]["chatbot"]["state"] if r.status_code == 200 else None


@pytest.fixture()
def logged(clean_redis: str, bot: Bot, tmp_path: Path) -> Iterator[Logged]:
    def decide(message: dict[str, Any], n: int) -> Answer:
        if message["mensaje"] == "flaky" and n == 0:
            return Answer(status=503, body={"error": "warming up", "token": SECRET})
        return Answer(body={"status": "ok", "reply": "hola"})

    bot.decide = decide
    routes = write_routes(
        tmp_path / "routes.yaml",
        bot.url,
        retry=FAST_RETRY,
        circuit_breaker={"enabled": False},
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    with serve(clean_redis, routes, run_workers=True, admin_token=TOKEN) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as api:
            ids = [_post(api, "a", "flaky")]
            wait_until(lambda: _state(api, ids[0]) == "delivered", what="the first delivered")
            ids.append(_post(api, "b", "one"))
            wait_until(lambda: _state(api, ids[1]) == "delivered", what="the second delivered")
            cut = int(time.time() * 1000) + 1
            wait_until(lambda: int(time.time() * 1000) > cut, what="the next millisecond")
            ids.append(_post(api, "a", "two"))
            wait_until(lambda: _state(api, ids[2]) == "delivered", what="the third delivered")
            yield Logged(api, ids, cut)


# -- the admin API -----------------------------------------------------------------


def test_a_message_story_as_the_admin_api_answers_it(logged: Logged) -> None:
    answer = logged.api.get(f"/admin/messages/{logged.ids[0]}")
    assert answer.status_code == 200, answer.text
    story = answer.json()
    assert story["id"] == logged.ids[0] and list(story["deliveries"]) == ["chatbot"]
    delivery = story["deliveries"]["chatbot"]
    assert set(delivery) == {"state", "key", "received_at", "seq", "attempts"}
    assert (delivery["state"], delivery["key"], delivery["seq"]) == ("delivered", "a", 1)
    failed, ok = delivery["attempts"]
    assert set(failed) == {
        "attempt",
        "outcome",
        "status",
        "duration_ms",
        "started_at",
        "error",
        "response",
    }
    assert (failed["attempt"], failed["outcome"], failed["status"]) == (1, "failed", 503)
    assert failed["error"].startswith("HTTP 503") and "warming up" in failed["response"]
    assert (ok["attempt"], ok["outcome"], ok["status"], ok["error"]) == (2, "ok", 200, None)
    assert '"hola"' in ok["response"]
    assert ok["started_at"] >= failed["started_at"] >= delivery["received_at"]
    assert SECRET not in answer.text  # starred in the answers the destination gave


def test_an_unknown_id_is_a_404_and_the_token_is_needed(logged: Logged) -> None:
    unknown = logged.api.get("/admin/messages/msg_nothing")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "status": "error",
        "error": "no destination's message log has a message 'msg_nothing'",
    }
    base = str(logged.api.base_url)
    for path in (f"/admin/messages/{logged.ids[0]}", "/admin/destinations/chatbot/messages"):
        refused = httpx.get(base + path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(base + path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_a_destination_messages_newest_first_and_filtered(logged: Logged) -> None:
    ids = logged.ids

    def listed(**query: Any) -> list[str]:
        answer = logged.api.get("/admin/destinations/chatbot/messages", params=query)
        assert answer.status_code == 200, answer.text
        return [m["id"] for m in answer.json()["messages"]]

    everything = logged.api.get("/admin/destinations/chatbot/messages").json()["messages"]
    assert [m["id"] for m in everything] == ids[::-1]
    assert everything[-1] == {
        "id": ids[0],
        "key": "a",
        "state": "delivered",
        "received_at": everything[-1]["received_at"],
        "attempts": 2,
        "seq": 1,
    }
    assert listed(key="a") == [ids[2], ids[0]]
    assert listed(key="nobody") == []
    assert listed(outcome="failed") == [ids[0]]
    assert listed(key="b", outcome="failed") == []
    assert listed(limit=2) == [ids[2], ids[1]]
    assert listed(since=str(logged.cut)) == [ids[2]]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(logged.cut / 1000 - 3600))
    assert listed(since=iso) == ids[::-1]
    assert listed(since="1h") == ids[::-1]
    assert listed(since="2099-01-01T00:00:00Z") == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"outcome": "ok"}, "outcome 'ok'"),
        ({"since": "yesterday"}, "since 'yesterday'"),
        ({"since": "-5m"}, "since '-5m'"),
        ({"limit": "0"}, "limit must be from 1 to 1000"),
        ({"limit": "1001"}, "limit must be from 1 to 1000"),
        ({"limit": "lots"}, "limit"),
    ],
)
def test_a_bad_search_is_a_400_naming_it(logged: Logged, query: dict[str, str], named: str) -> None:
    answer = logged.api.get("/admin/destinations/chatbot/messages", params=query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["status"] == "error" and named in answer.json()["error"]


def test_an_unknown_destination_has_no_messages(logged: Logged) -> None:
    answer = logged.api.get("/admin/destinations/nobody/messages")
    assert answer.status_code == 404
    assert answer.json()["error"] == "no destination named 'nobody'"


# -- the dashboard -----------------------------------------------------------------


@pytest.fixture()
def ui(logged: Logged) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=logged.api.base_url, timeout=10) as client:
        answer = client.post("/ui/login", data={"token": TOKEN, "next": "/ui"})
        assert answer.status_code == 303, answer.text
        yield client


def test_the_message_page_shows_each_attempt(logged: Logged, ui: httpx.Client) -> None:
    page = ui.get(f"/ui/messages/{logged.ids[0]}")
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert 'data-delivery="chatbot"' in page.text and 'data-state="delivered"' in page.text
    assert 'data-attempt="1" data-outcome="failed"' in page.text
    assert 'data-attempt="2" data-outcome="ok"' in page.text
    assert '<pre class="response">{&#34;error&#34;: &#34;warming up&#34;' in page.text
    assert SECRET not in page.text
    missing = ui.get("/ui/messages/msg_nothing")
    assert missing.status_code == 404 and "msg_nothing" in missing.text
    # Without a session: the login, as every page.
    with httpx.Client(base_url=logged.api.base_url) as stranger:
        assert stranger.get(f"/ui/messages/{logged.ids[0]}").status_code == 303


def test_the_search_box_takes_an_id_or_a_key(logged: Logged, ui: httpx.Client) -> None:
    ids = logged.ids
    assert 'action="/ui/search"' in ui.get("/ui").text
    by_id = ui.get("/ui/search", params={"q": f" {ids[1]} "})
    assert by_id.status_code == 303 and by_id.headers["location"] == f"/ui/messages/{ids[1]}"
    by_key = ui.get("/ui/search", params={"q": "a"})
    assert by_key.status_code == 200
    listed = [i for i in ids if f'href="/ui/messages/{i}"' in by_key.text]
    assert listed == [ids[0], ids[2]]
    assert by_key.text.index(ids[2]) < by_key.text.index(ids[0])  # newest first
    # From a destination's page: back to it, its messages of that key.
    there = ui.get("/ui/search", params={"q": "a", "destination": "chatbot"})
    assert there.status_code == 303
    assert there.headers["location"] == "/ui/destinations/chatbot?key=a#messages"
    assert ui.get("/ui/search", params={"q": " "}).status_code == 400


def test_the_destination_page_lists_recent_messages(logged: Logged, ui: httpx.Client) -> None:
    ids = logged.ids
    page = ui.get("/ui/destinations/chatbot").text
    section = page[page.index('id="messages"') : page.index('id="dead"')]
    shown = [i for i in ids if f'data-message="{i}"' in section]
    assert shown == ids and section.index(ids[2]) < section.index(ids[1]) < section.index(ids[0])
    failed = ui.get("/ui/destinations/chatbot", params={"failed": "1"}).text
    failed = failed[failed.index('id="messages"') : failed.index('id="dead"')]
    assert [i for i in ids if f'data-message="{i}"' in failed] == [ids[0]]
    assert "checked" in failed
    of_b = ui.get("/ui/destinations/chatbot", params={"key": "b"}).text
    of_b = of_b[of_b.index('id="messages"') : of_b.index('id="dead"')]
    assert [i for i in ids if f'data-message="{i}"' in of_b] == [ids[1]]

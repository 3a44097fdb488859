"""The dashboard over plain HTTP: what exists without the admin token,
who gets in, what every page answers with (security headers), what a
forged form or a wrong count gets. The browser tests (tests/browser) click
through the same pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from router.web.ui import sessions
from tests.support.routes import KEYS, routes_file
from tests.support.servers import serve, wait_until

TOKEN = "ui-token"


@pytest.fixture()
def ui(clean_redis: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with serve(clean_redis, routes_file(tmp_path / "routes.yaml"), admin_token=TOKEN) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def logged_in(client: httpx.Client) -> httpx.Client:
    answer = client.post("/ui/login", data={"token": TOKEN, "next": "/ui"})
    assert answer.status_code == 303, answer.text
    return client


def test_without_the_admin_token_there_is_no_dashboard(clean_redis: str, tmp_path: Path) -> None:
    with serve(clean_redis, routes_file(tmp_path / "routes.yaml")) as server:
        for path in ("/ui", "/ui/login", "/ui/static/ui.js"):
            assert httpx.get(server.url + path).status_code == 404, path


def test_pages_need_a_session_or_the_bearer_token(ui: httpx.Client) -> None:
    answer = ui.get("/ui/destinations/chatbot?start=0")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fdestinations%2Fchatbot%3Fstart%3D0"
    # An action without a session changes nothing and leads to the login.
    answer = ui.post("/ui/destinations/chatbot/pause")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")
    # Scripts: the admin API's bearer token; a wrong one is a 401, no redirect.
    assert ui.get("/ui", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    wrong = ui.get("/ui", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    # A session made with another token, or altered, is no session.
    for forged in (sessions.new_session("another token"), "99999999999.00", "x"):
        ui.cookies.set(sessions.COOKIE, forged, path="/ui")
        assert ui.get("/ui").status_code == 303
    ui.cookies.clear()
    # The static files are no secret: the login page needs them.
    assert ui.get("/ui/static/ui.css").status_code == 200


def test_login_cookie_and_logout(ui: httpx.Client) -> None:
    wrong = ui.post("/ui/login", data={"token": "nope", "next": "/ui"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    answer = ui.post("/ui/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/ui", "SameSite=strict", "Max-Age=43200"):
        assert flag in cookie, cookie
    assert "Secure" not in cookie  # plain http here
    assert ui.get("/ui").status_code == 200
    # Behind a TLS proxy the cookie is Secure.
    proxied = ui.post("/ui/login", data={"token": TOKEN}, headers={"x-forwarded-proto": "https"})
    assert "Secure" in proxied.headers["set-cookie"]
    out = ui.post("/ui/logout")
    assert out.status_code == 303 and 'router_ui_session=""' in out.headers["set-cookie"]


def test_every_page_carries_a_strict_content_security_policy(ui: httpx.Client) -> None:
    pages = [ui.get("/ui/login")]
    logged_in(ui)
    pages += [ui.get(p) for p in ("/ui", "/ui/destinations/chatbot", "/ui/destinations/nope")]
    for answer in pages:
        path = answer.url.path
        assert answer.headers["content-type"].startswith("text/html"), path
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
    nope = ui.get("/ui/destinations/nope")
    assert nope.status_code == 404 and "No destination named &#39;nope&#39;" in nope.text


def test_a_form_from_another_origin_is_refused(ui: httpx.Client, redis: Redis) -> None:
    logged_in(ui)
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{ui.base_url.port}.evil"):
        answer = ui.post("/ui/destinations/chatbot/pause", headers={"origin": origin})
        assert answer.status_code == 403, origin
    assert not redis.exists(KEYS.paused)
    own = f"http://127.0.0.1:{ui.base_url.port}"
    answer = ui.post("/ui/destinations/chatbot/pause", headers={"origin": own})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/destinations/chatbot?done=paused"
    assert redis.exists(KEYS.paused)
    # Even the login form: a site cannot log the browser in with its token.
    login = ui.post("/ui/login", data={"token": TOKEN}, headers={"origin": "https://evil.example"})
    assert login.status_code == 403


def test_a_count_must_be_a_whole_number(ui: httpx.Client) -> None:
    logged_in(ui)
    for bad in ("0", "-1", "1.5", "lots"):
        answer = ui.post("/ui/destinations/chatbot/dead/purge", data={"count": bad})
        assert answer.status_code == 400, bad
        assert "whole number" in answer.text
    answer = ui.post("/ui/destinations/chatbot/dead/replay", data={"count": ""})
    assert answer.headers["location"] == "/ui/destinations/chatbot?done=replayed"


def test_a_destination_down_or_held_says_so(ui: httpx.Client, redis: Redis) -> None:
    """The circuit breaker's state (docs/destination-health.md) as the
    overview and the destination page show it, read from Redis as every
    process writes it."""
    logged_in(ui)
    assert 'class="badge running"' in ui.get("/ui").text
    redis.hset(KEYS.health, mapping={"state": "down", "since": 1, "probe_at": 1})
    for page in ("/ui", "/ui/destinations/chatbot"):
        # The figures are read at most once a second.
        wait_until(lambda page=page: 'class="badge down"' in ui.get(page).text, what=page)
    redis.delete(KEYS.health)
    redis.hset(KEYS.health, "hold_until", int(time.time() * 1000) + 60_000)
    wait_until(lambda: 'class="badge held"' in ui.get("/ui").text, what="held")

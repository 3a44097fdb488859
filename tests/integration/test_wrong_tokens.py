"""Guessing the admin token: wrong tokens are throttled per client and
logged, on the dashboard's login, its bearer access and the admin API alike
(one table, router.http.throttle); the Bearer scheme is case-insensitive
everywhere (RFC 7235)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.http.throttle import (
    FREE_FAILURES,
    MAX_CLIENTS,
    MAX_DELAY,
    FailedAuthThrottle,
    TooManyWrongTokens,
)
from tests.integration.test_openapi import assert_documented
from tests.support.routes import routes_file
from tests.support.servers import ServerThread, serve, wait_until

TOKEN = "the-admin-token-of-this-test"
GUESS = "guess-that-must-never-be-logged"


@pytest.fixture()
def server(clean_redis: str, tmp_path: Path) -> Iterator[ServerThread]:
    routes = routes_file(tmp_path / "routes.yaml")
    with serve(clean_redis, routes, admin_token=TOKEN, metrics_token=TOKEN + "-m") as running:
        yield running


def client_from(server: ServerThread, address: str) -> httpx.Client:
    """A client whose requests come from `address` (any of 127.0.0.0/8)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, timeout=10, transport=transport)


def login(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/ui/login", data={"token": token, "next": "/ui"})


def test_a_lowercase_bearer_scheme_opens_the_admin_api_as_it_opens_the_dashboard(
    server: ServerThread,
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        headers = {"authorization": f"{scheme} {TOKEN}"}
        admin = httpx.get(server.url + "/admin/destinations", headers=headers)
        assert admin.status_code == 200, (scheme, admin.text)
        assert httpx.get(server.url + "/ui", headers=headers).status_code == 200, scheme
        metrics = {"authorization": f"{scheme} {TOKEN}-m"}
        assert httpx.get(server.url + "/metrics", headers=metrics).status_code == 200, scheme
    wrong = httpx.get(server.url + "/admin/destinations", headers={"authorization": "Basic x"})
    assert wrong.status_code == 401 and wrong.json()["status"] == "error"


# A wait of 2 s must still be running at the next request: six test workers
# on two cores once took longer than that between two requests.
@pytest.mark.serial
def test_wrong_login_guesses_are_throttled_per_client_and_logged(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="router.auth")
    with client_from(server, "127.0.0.1") as guesser, client_from(server, "127.0.0.2") as admin:
        for _ in range(FREE_FAILURES):
            assert login(guesser, GUESS).status_code == 401
        # Now the guesser waits, whatever it sends, on every door of the token.
        refused = login(guesser, GUESS)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "try again in 1 s" in refused.text
        assert login(guesser, TOKEN).status_code == 429  # the right one too
        api = guesser.get("/admin/destinations", headers={"authorization": f"Bearer {TOKEN}"})
        assert api.status_code == 429 and api.headers["retry-after"] == "1"
        assert api.json() == {
            "status": "error",
            "error": "too many wrong tokens from 127.0.0.1: try again in 1 s",
        }
        doc = admin.get("/schema/openapi.json").json()
        assert_documented(doc, "get", "/admin/destinations", api)
        page = guesser.get("/ui", headers={"authorization": f"Bearer {GUESS}"})
        assert page.status_code == 429 and "text/html" in page.headers["content-type"]
        # Another client is not held up by it.
        assert login(admin, TOKEN).status_code == 303

        # After the wait, each further wrong token doubles the next wait.
        wait_until(lambda: login(guesser, GUESS).status_code == 401, timeout=5, what="wait over")
        again = login(guesser, GUESS)
        assert again.status_code == 429 and again.headers["retry-after"] == "2"
        # The right token, once allowed, forgets the failures.
        wait_until(lambda: login(guesser, TOKEN).status_code == 303, timeout=5, what="token ok")
        assert login(guesser, GUESS).status_code == 401

    lines = [r.getMessage() for r in caplog.records if r.name == "router.auth"]
    wrong = [line for line in lines if line.startswith("wrong token from 127.0.0.1 on /ui/login")]
    assert len(wrong) == FREE_FAILURES + 2, lines  # each wrong token, one line each
    assert "(1 in a row)" in wrong[0] and "next attempt in 1 s" in wrong[FREE_FAILURES - 1]
    # Each wait's refusals are logged once, not once per request.
    assert sum("refusing tokens from 127.0.0.1" in line for line in lines) == 2, lines
    assert not any(GUESS in line or TOKEN in line for line in lines)


def test_a_wrong_admin_api_token_counts_as_a_wrong_login(server: ServerThread) -> None:
    headers = {"authorization": f"bearer {GUESS}"}
    with client_from(server, "127.0.0.3") as guesser:
        for _ in range(FREE_FAILURES):
            answer = guesser.get("/admin/destinations", headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert login(guesser, GUESS).status_code == 429
        # No token at all is no guess: it is told what to send, not throttled
        # further (it is still waiting out the guesses above).
        with client_from(server, "127.0.0.4") as curious:
            for _ in range(FREE_FAILURES + 2):
                assert curious.get("/admin/destinations").status_code == 401


def test_the_table_of_clients_is_bounded_and_the_wait_capped() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(clock=lambda: now[0])
    for i in range(MAX_CLIENTS + 5000):
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "/ui/login")
    assert len(throttle) == MAX_CLIENTS
    for _ in range(2000):  # past 2**1000 seconds: no overflow, the cap holds
        now[0] += MAX_DELAY
        throttle.failed("192.0.2.1", "/ui/login")
    with pytest.raises(TooManyWrongTokens) as refused:
        throttle.refuse_if_waiting("192.0.2.1", "/ui/login")
    assert refused.value.wait == MAX_DELAY

"""Paging parameters from outside (huge, negative, not numbers) on the
dashboard and the admin API: a 400 naming the allowed range, never Redis's
error as a 503 (router.http.paging)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.routes import routes_file
from tests.support.servers import serve

TOKEN = "paging-test-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
HUGE = ["9223372036854775807", "2147483648", "99999999999999999999999", "9" * 5000]


@pytest.fixture()
def server(clean_redis: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with serve(clean_redis, routes_file(tmp_path / "routes.yaml"), admin_token=TOKEN) as running:
        with httpx.Client(base_url=running.url, headers=AUTH, timeout=10) as client:
            yield client


@pytest.mark.parametrize("start", [*HUGE, "-1", "x", "1.5", ""])
def test_a_bad_start_is_a_400_on_the_dashboard_and_the_admin_api(
    server: httpx.Client, start: str
) -> None:
    for path in ("/ui/destinations/chatbot", "/admin/destinations/chatbot/dead"):
        answer = server.get(path, params={"start": start})
        assert answer.status_code == 400, (path, start, answer.status_code, answer.text[:300])
        if path.startswith("/admin"):
            assert answer.json()["status"] == "error"
    # The last position any list can have still answers (an empty page).
    assert server.get("/ui/destinations/chatbot", params={"start": "2147483647"}).status_code == 200
    last = server.get("/admin/destinations/chatbot/dead", params={"start": "2147483647"})
    assert last.status_code == 200 and last.json() == {"dead": []}


@pytest.mark.parametrize("count", [*HUGE, "0", "-5", "x"])
def test_a_bad_count_is_a_400_on_the_dashboard_and_the_admin_api(
    server: httpx.Client, count: str
) -> None:
    listed = server.get("/admin/destinations/chatbot/dead", params={"count": count})
    assert listed.status_code == 400, (count, listed.text[:300])
    for action in ("replay", "purge"):
        admin = server.post(f"/admin/destinations/chatbot/dead/{action}", params={"count": count})
        assert admin.status_code == 400, (action, count, admin.text[:300])
        page = server.post(f"/ui/destinations/chatbot/dead/{action}", data={"count": count})
        assert page.status_code == 400, (action, count, page.text[:300])
    # A count above the page size is cut to it, not refused.
    assert server.get("/admin/destinations/chatbot/dead", params={"count": "5000"}).is_success

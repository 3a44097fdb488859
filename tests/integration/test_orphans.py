"""The admin API on a destination removed from routes.yaml while it still
holds messages (an orphan): its dead letters listed, replayed into a
configured destination and purged; its queued messages moved, in order, or
purged; every answer the documented one. (The same from the command line:
tests/process/test_orphans.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx
from redis import Redis

from router.queue.keys import DestinationKeys
from tests.integration.test_openapi import assert_documented
from tests.support.bot import Bot
from tests.support.queues import build_queue, lane
from tests.support.routes import write_routes
from tests.support.servers import serve, wait_until

TOKEN = "admin-token-orphans"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLACK = DestinationKeys("slack")


def test_an_orphans_messages_are_reachable_through_the_admin_api(
    tmp_path: Path, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    ids = build_queue(
        clean_redis,
        "slack",
        dead={"u": ["d1", "d2"], "w": ["w1"]},
        queued={"u": ["q1", "q2"], "x": ["x1"]},
    )
    routes = write_routes(tmp_path / "routes.yaml", bot.url)  # chatbot only
    with (
        serve(clean_redis, routes, admin_token=TOKEN, run_workers=True) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as admin,
    ):
        doc = admin.get("/schema/openapi.json").json()

        listed = admin.get("/admin/destinations/slack/dead")
        assert listed.status_code == 200, listed.text
        assert_documented(doc, "get", "/admin/destinations/{name}/dead", listed)
        assert [d["key"] for d in listed.json()["dead"]] == ["u", "u", "w"]
        assert admin.get("/admin/destinations").json()["slack"]["orphaned"] is True

        # Nothing would deliver it where it is: refused, with the way out.
        refused = admin.post("/admin/destinations/slack/dead/replay")
        assert refused.status_code == 409 and "?into=" in refused.json()["error"]
        assert_documented(doc, "post", "/admin/destinations/{name}/dead/replay", refused)
        for into, words in (("sms", "no destination named 'sms'"), ("slack", "itself")):
            bad = admin.post("/admin/destinations/slack/dead/replay", params={"into": into})
            assert bad.status_code == 400 and words in bad.json()["error"]
            assert_documented(doc, "post", "/admin/destinations/{name}/dead/replay", bad)
        configured = admin.post("/admin/destinations/chatbot/orphan/purge")
        assert configured.status_code == 409 and "is in routes.yaml" in configured.text
        assert_documented(doc, "post", "/admin/destinations/{name}/orphan/purge", configured)

        # u's dead letters into chatbot, then the queue: u in its order.
        replayed = admin.post(
            "/admin/destinations/slack/dead/replay", params={"into": "chatbot", "count": "2"}
        )
        assert replayed.json() == {"status": "ok", "replayed": 2}
        assert_documented(doc, "post", "/admin/destinations/{name}/dead/replay", replayed)
        moved = admin.post("/admin/destinations/slack/orphan/move", params={"into": "chatbot"})
        assert moved.json() == {"status": "ok", "moved": 3, "in_flight": []}
        assert_documented(doc, "post", "/admin/destinations/{name}/orphan/move", moved)
        wait_until(lambda: len(bot.acknowledged()) == 5, what="the moved messages delivered")
        assert bot.acked_messages("u") == ["d1", "d2", "q1", "q2"]
        assert bot.acked_messages("x") == ["x1"]
        assert bot.attempts_of("q1")[0].headers["idempotency-key"] == ids["q1"]
        assert lane(redis, SLACK, "u") == [] and lane(redis, SLACK, "x") == []

        # The rest purged: slack holds nothing and is no longer listed.
        purged = admin.post("/admin/destinations/slack/dead/purge")
        assert purged.json() == {"status": "ok", "purged": 1}
        nothing = admin.post("/admin/destinations/slack/orphan/purge")
        assert nothing.json() == {"status": "ok", "purged": 0, "in_flight": []}
        assert_documented(doc, "post", "/admin/destinations/{name}/orphan/purge", nothing)
        assert "slack" not in admin.get("/admin/destinations").json()
        unknown = admin.post("/admin/destinations/nope/orphan/purge")
        assert unknown.status_code == 404
        assert_documented(doc, "post", "/admin/destinations/{name}/orphan/purge", unknown)
        assert len(bot.received) == 5  # each once

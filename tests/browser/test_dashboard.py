"""The dashboard through a real browser: login, the figures against Redis,
replay, purge, pause/resume and unblock clicked on the page, delivered by
the real router to the real bot. Every test also fails on any console
error or failed request of its pages (conftest.Watch)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from router.queue.keys import DestinationKeys, operator_log_key
from tests.browser.conftest import Dashboard
from tests.browser.scene import DESTINATIONS, TOKEN, Scene
from tests.support.bot import Answer
from tests.support.servers import wait_until

if TYPE_CHECKING:  # imported only where a browser runs (tests/browser/conftest.py)
    from playwright.sync_api import Dialog, Page

FIGURES = ("messages", "ready", "in_flight", "delayed", "blocked", "dead")


def shown(page: Page, destination: str) -> dict[str, int]:
    row = page.locator(f'tr[data-destination="{destination}"]')
    return {f: int(row.locator(f'td[data-figure="{f}"]').inner_text()) for f in FIGURES}


def accept(dialog: Dialog) -> None:
    dialog.accept()


def make_dead_letters(scene: Scene, *mensajes: str, key: str = "kd") -> None:
    scene.fail(*mensajes)
    for m in mensajes:
        scene.post("chatbot", key, m)
    wait_until(lambda: scene.figures("chatbot")["dead"] == len(mensajes), what="dead letters")


def make_blocked_key(scene: Scene, key: str = "a1") -> None:
    scene.fail("stuck")
    scene.post("alerts", key, "stuck")
    scene.post("alerts", key, "behind")  # waits behind its blocked head
    wait_until(lambda: scene.figures("alerts")["blocked"] == 1, what="a blocked key")


def test_login_sets_a_strict_http_only_cookie_and_a_wrong_token_is_refused(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    page.wait_for_url("**/ui/login?next=%2Fui%2Fdestinations%2Fchatbot")

    dashboard.watch.expect(401)
    page.fill("#token", "not-the-token")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "That is not the admin token."
    assert page.context.cookies() == []

    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(dashboard.url + "/ui/destinations/chatbot")  # where it was going
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"]  # a signed session, not the token itself

    page.click("text=Log out")
    page.wait_for_url("**/ui/login")
    assert page.context.cookies() == []
    page.goto(dashboard.url + "/ui")
    page.wait_for_url("**/ui/login?next=%2Fui")


def test_pages_load_and_refresh_without_console_errors(dashboard: Dashboard, scene: Scene) -> None:
    make_dead_letters(scene, "<script>alert('dead')</script>")
    make_blocked_key(scene)
    page = dashboard.page
    alerts: list[str] = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    dashboard.login()
    for path in ("/ui", "/ui/destinations/chatbot", "/ui/destinations/alerts"):
        page.goto(dashboard.url + path)
        page.wait_for_load_state("networkidle")
        # The page refreshes itself (every second here): the time moves on.
        first = page.locator(".asof").inner_text()
        wait_until(lambda f=first: page.locator(".asof").inner_text() != f, what="a refresh")
        assert page.locator("figure.chart svg").count() == 2
    # The hostile body is shown as text, never run.
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    page.locator("#dead details.body summary").first.click()
    assert "<script>alert('dead')</script>" in page.locator("#dead pre").first.inner_text()
    assert alerts == []
    # The sampler has drawn something by now (every half second here).
    page.goto(dashboard.url + "/ui")
    wait_until(
        lambda: page.reload() is not None and page.locator("polyline.line").count() > 0,
        what="a chart line",
    )


def test_the_figures_on_the_page_are_what_redis_holds(dashboard: Dashboard, scene: Scene) -> None:
    for key in ("k1", "k2", "k3"):
        scene.post("chatbot", key, f"{key}-ok")
    make_dead_letters(scene, "dead-1", "dead-2")
    make_blocked_key(scene)
    wait_until(lambda: len(scene.bot.acknowledged()) == 3, what="the good messages")
    page = dashboard.page
    dashboard.login()
    with page.expect_navigation():  # the form's answer, back to the overview
        page.locator('tr[data-destination="chatbot"] button[data-action="pause"]').click()
    for key, mensaje in (("k4", "w1"), ("k5", "w2"), ("k5", "w3")):
        scene.post("chatbot", key, mensaje)  # stored, waiting out the pause

    def page_matches_redis() -> bool:
        page.reload()
        return all(shown(page, d) == scene.figures(d) for d in DESTINATIONS)

    wait_until(page_matches_redis, what="the page to show what Redis holds")
    assert scene.figures("chatbot") == {
        "messages": 3,
        "ready": 2,
        "in_flight": 0,
        "delayed": 0,
        "blocked": 0,
        "dead": 2,
    }
    assert scene.figures("alerts")["blocked"] == 1 and scene.figures("alerts")["messages"] == 2
    state = page.locator('tr[data-destination="chatbot"] td[data-figure="state"]')
    assert "paused" in state.inner_text()

    # The destination's own page: the same figures, every dead letter with
    # its body, error and attempts, the blocked key with its head message.
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    assert shown(page, "chatbot") == scene.figures("chatbot")
    rows = page.locator("#dead tbody tr")
    assert rows.count() == 2
    for i, mensaje in enumerate(("dead-1", "dead-2")):  # oldest first
        row = rows.nth(i)
        assert row.get_attribute("data-dead-key") == "kd"
        assert mensaje in row.locator("pre").text_content()
        assert "500" in row.locator(".error-text").inner_text()
        assert row.locator("td.num").inner_text() == "2"
    page.goto(dashboard.url + "/ui/destinations/alerts")
    blocked = page.locator('#blocked tr[data-blocked-key="a1"]')
    assert "stuck" in blocked.locator("pre").text_content()
    assert blocked.locator("td.num").nth(1).inner_text() == "2"  # head + one behind


def test_replay_through_the_page_delivers_the_dead_letters(
    dashboard: Dashboard, scene: Scene
) -> None:
    # One key: its letters come back in their order (a worker taking the
    # first back while the next was replayed once reordered them).
    scene.fail("dead-1", "dead-2", "dead-3")
    for n in (1, 2, 3):
        scene.post("chatbot", "kd", f"dead-{n}")
        wait_until(lambda n=n: scene.figures("chatbot")["dead"] == n, what=f"dead letter {n}")
    scene.heal()
    page = dashboard.page
    page.on("dialog", accept)
    dashboard.login()
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    page.fill('form[action$="/dead/replay"] input[name=count]', "2")
    with page.expect_navigation():
        page.click('button[data-action="replay"]')
    assert page.url == dashboard.url + "/ui/destinations/chatbot"  # the notice left the URL
    assert page.locator(".flash").inner_text().startswith("Replayed 2 dead letter(s)")
    wait_until(
        lambda: scene.bot.acked_messages("kd") == ["dead-1", "dead-2"],
        what="the two oldest, replayed, in order",
    )
    assert scene.figures("chatbot")["dead"] == 1
    with page.expect_navigation():
        page.click('button[data-action="replay"]')  # the rest (an empty count: all)
    assert page.locator(".flash").inner_text().startswith("Replayed 1 dead letter(s)")
    wait_until(
        lambda: scene.bot.acked_messages("kd") == ["dead-1", "dead-2", "dead-3"],
        what="the last replay",
    )
    wait_until(
        lambda: page.reload() is not None and shown(page, "chatbot")["dead"] == 0,
        what="the page to show no dead letters",
    )
    assert page.locator("#dead .none").inner_text() == "No dead letters."


def test_purge_asks_first_and_drops_the_oldest(dashboard: Dashboard, scene: Scene) -> None:
    make_dead_letters(scene, "dead-1", "dead-2")
    page = dashboard.page
    dashboard.login()
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.once("dialog", lambda d: d.dismiss())  # "Purge these dead letters?" No.
    page.click('button[data-action="purge"]')
    page.wait_for_timeout(500)  # a form the dialog let through would be on its way by now
    assert [u for u in sent if u.endswith("/dead/purge")] == []
    assert scene.figures("chatbot")["dead"] == 2
    page.once("dialog", accept)
    page.fill('form[action$="/dead/purge"] input[name=count]', "1")
    with page.expect_navigation():
        page.click('button[data-action="purge"]')
    assert page.locator(".flash").inner_text() == "Purged 1 dead letter(s)."
    assert scene.figures("chatbot")["dead"] == 1
    assert "dead-2" in page.locator("#dead pre").text_content()
    assert scene.bot.acked_messages() == []  # purged, not delivered


def test_pause_through_the_page_stops_delivery_and_resume_restarts_it(
    dashboard: Dashboard, scene: Scene
) -> None:
    page = dashboard.page
    dashboard.login()
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    with page.expect_navigation():
        page.click('button[data-action="pause"]')
    assert page.locator('button[data-action="resume"]').count() == 1
    assert scene.paused("chatbot")
    scene.post("chatbot", "k1", "while-paused")
    wait_until(
        lambda: page.reload() is not None and shown(page, "chatbot")["messages"] == 1,
        what="the page to show the stored message",
    )
    # Workers look at least once a second: for two seconds nothing goes out.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert scene.bot.received == []
        time.sleep(0.05)
    with page.expect_navigation():
        page.click('button[data-action="resume"]')
    assert page.locator('button[data-action="pause"]').count() == 1
    assert not scene.paused("chatbot")
    wait_until(lambda: scene.bot.acked_messages() == ["while-paused"], what="delivery on resume")


def test_unblock_through_the_page_retries_the_head_then_the_rest(
    dashboard: Dashboard, scene: Scene
) -> None:
    make_blocked_key(scene, key="a/1 %é")  # a key no URL path could carry as it is
    scene.heal()
    page = dashboard.page
    dashboard.login()
    page.goto(dashboard.url + "/ui/destinations/alerts")
    with page.expect_navigation():
        page.locator('tr[data-blocked-key="a/1 %é"] button[data-action="unblock"]').click()
    assert page.locator(".flash").inner_text().startswith("Unblocked")
    wait_until(
        lambda: scene.bot.acked_messages("a/1 %é") == ["stuck", "behind"],
        what="the unblocked key's messages, in order",
    )
    wait_until(
        lambda: page.reload() is not None and page.locator("#blocked .none").count() == 1,
        what="the page to show no blocked key",
    )


def test_a_form_from_another_site_is_refused(dashboard: Dashboard, scene: Scene) -> None:
    """CSRF: even were the browser to send the cookie, a POST whose Origin
    is another site changes nothing."""
    page = dashboard.page
    dashboard.login()
    dashboard.watch.expect(403)
    answer = page.request.post(
        dashboard.url + "/ui/destinations/chatbot/pause",
        headers={"Origin": "https://evil.example"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert not scene.paused("chatbot")


def test_retry_now_on_a_held_destination_delivers_at_once_and_is_logged(
    dashboard: Dashboard, scene: Scene
) -> None:
    """A destination held by a Retry-After of 5 minutes: the overview's
    "Retry now" does what `router retry DEST` does, and the action is
    recorded for the servers' log (router.queue.operator_log)."""
    holding = {"on": True}
    scene.bot.decide = lambda m, n: (
        Answer(503, "busy", headers={"Retry-After": "300"}) if holding["on"] else Answer()
    )
    scene.post("chatbot", "k1", "held-1")
    health = DestinationKeys("chatbot").health
    wait_until(lambda: scene.redis.hexists(health, "hold_until"), what="the destination held")
    scene.post("chatbot", "k2", "held-2")  # waits out the hold, never attempted
    holding["on"] = False
    page = dashboard.page
    dashboard.login()
    row = page.locator('tr[data-destination="chatbot"]')
    wait_until(  # the figures may be a second old
        lambda: page.reload() is not None and row.locator(".badge.held").count() == 1,
        what="the page to show the destination held",
    )
    assert page.locator('tr[data-destination="alerts"] button[data-action="retry"]').count() == 0
    with page.expect_navigation():
        row.locator('button[data-action="retry"]').click()
    assert page.locator(".flash").inner_text().startswith("Retrying now: 2 waiting key(s)")
    wait_until(
        lambda: sorted(scene.bot.acked_messages()) == ["held-1", "held-2"],
        what="both messages delivered without waiting out the hold",
    )
    assert not scene.redis.exists(health)
    assert page.locator('tr[data-destination="chatbot"] button[data-action="retry"]').count() == 0
    (entry,) = [f for _, f in scene.redis.xrange(operator_log_key())]
    assert entry[b"action"] == b"retry" and entry[b"subject"] == b"chatbot"
    assert entry[b"source"] == b"ui 127.0.0.1" and entry[b"result"] == b"2 resumed"


def test_search_an_id_then_read_its_story_and_filter_the_failed(
    dashboard: Dashboard, scene: Scene
) -> None:
    hostile = "<script>alert('answer')</script>"

    def decide(message: dict[str, Any], n: int) -> Answer:
        if message.get("mensaje") == "flaky" and n == 0:
            return Answer(503, {"error": hostile})
        return Answer()

    scene.bot.decide = decide
    ids = [scene.post_id("chatbot", "k1", "flaky"), scene.post_id("chatbot", "k2", "fine")]
    page = dashboard.page
    alerts: list[str] = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    dashboard.login()

    # The search box takes an id: its page, each attempt, the answer as text.
    page.fill("input[name=q]", ids[0])
    page.click("button[data-action=search]")
    page.wait_for_url(f"**/ui/messages/{ids[0]}")
    wait_until(
        lambda: page.reload() is not None and page.locator('tr[data-outcome="ok"]').count() == 1,
        what="the delivery shown",
    )
    assert page.locator("tr[data-attempt]").count() == 2
    assert page.locator('tr[data-outcome="failed"] pre.response').inner_text() == (
        f'{{"error": "{hostile}"}}'
    )
    assert alerts == []

    # Its destination's page: recent messages, then failed only.
    page.click('a[href="/ui/destinations/chatbot"]')
    page.wait_for_url("**/ui/destinations/chatbot")
    assert page.locator("#messages tr[data-message]").count() == 2
    page.check("#messages input[name=failed]")
    page.click("button[data-action=filter]")
    page.wait_for_url(lambda url: "failed=1" in url)
    assert page.locator("#messages tr[data-message]").count() == 1
    page.click(f'#messages a[href="/ui/messages/{ids[0]}"]')
    page.wait_for_url(f"**/ui/messages/{ids[0]}")

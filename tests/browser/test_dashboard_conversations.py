"""One conversation's controls on the destination page, through a real
browser: pause it with the form (the others go on), skip its failing head
(asked first), resume it from its row; delivered by the real router to the
real bot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.queue.keys import DestinationKeys
from tests.browser.conftest import Dashboard
from tests.browser.scene import Scene
from tests.support.servers import wait_until

if TYPE_CHECKING:  # imported only where a browser runs (tests/browser/conftest.py)
    from playwright.sync_api import Dialog

KEY = "c/1 %é"  # a key no URL path could carry as it is


def accept(dialog: Dialog) -> None:
    dialog.accept()


def test_pause_skip_and_resume_one_conversation_through_the_page(
    dashboard: Dashboard, scene: Scene
) -> None:
    page = dashboard.page
    dashboard.login()
    page.goto(dashboard.url + "/ui/destinations/chatbot")
    page.fill('form[data-form="conversation"] input[name=key]', KEY)
    with page.expect_navigation():
        page.click('form[data-form="conversation"] button[data-action="pause-key"]')
    assert page.locator(".flash").inner_text().startswith("Conversation paused")
    assert page.locator(f'tr[data-paused-key="{KEY}"]').count() == 1
    scene.fail("stuck")
    for mensaje in ("stuck", "next-1", "next-2"):
        scene.post("chatbot", KEY, mensaje)
    scene.post("chatbot", "other", "goes")
    wait_until(lambda: scene.bot.acked_messages("other") == ["goes"], what="the other key")
    parked = DestinationKeys("chatbot").paused_keys
    wait_until(lambda: b'"parked":true' in (scene.redis.hget(parked, KEY) or b""), what="parked")
    assert [r for r in scene.bot.received if r.body["wa_id"] == KEY] == []
    page.reload()
    row = page.locator(f'tr[data-paused-key="{KEY}"]')
    assert "paused" in row.inner_text() and "3" in row.inner_text()
    # Skip asks first: dismissed, nothing is sent.
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.once("dialog", lambda d: d.dismiss())
    row.locator('button[data-action="skip-key"]').click()
    page.wait_for_timeout(500)  # a form the dialog let through would be on its way by now
    assert sent == []
    page.once("dialog", accept)
    with page.expect_navigation():
        row.locator('button[data-action="skip-key"]').click()
    assert (
        page.locator(".flash")
        .inner_text()
        .startswith("Skipped the conversation's head message (sequence number 1)")
    )
    assert scene.figures("chatbot")["dead"] == 1
    with page.expect_navigation():
        page.locator(f'tr[data-paused-key="{KEY}"] button[data-action="resume-key"]').click()
    assert page.locator(".flash").inner_text().startswith("Conversation resumed")
    assert page.locator("#conversations .none").count() == 1
    wait_until(
        lambda: scene.bot.acked_messages(KEY) == ["next-1", "next-2"],
        what="the rest of the conversation, in order",
    )
    assert scene.bot.attempts_of("stuck") == []  # skipped while paused: never sent

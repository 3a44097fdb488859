"""The dashboard in a real headless Chromium, driven by playwright.

The browser is the system's Chromium (Debian's `chromium` package, which
.ci/run installs), never one `playwright install` downloads. Without one
the tests are skipped, with the reason; ROUTER_TEST_CHROMIUM names another
binary.

Every page a test opens is watched: a console error, an uncaught script
error, a failed request or an answer >= 400 fails the test, unless the test
said it expects that status (`watch.expect(401)`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync

import router.web.ui.handlers
import router.web.ui.history
from tests.browser.scene import TOKEN, Scene, scene_routes
from tests.support.bot import Bot
from tests.support.servers import serve

if TYPE_CHECKING:  # playwright is imported by the fixture that runs it: every
    # parallel worker collects this file, few run a browser test.
    from playwright.sync_api import Browser, Page, Request


def chromium_executable() -> str | None:
    wanted = os.environ.get("ROUTER_TEST_CHROMIUM")
    if wanted:
        return wanted
    # Debian's real binary first: /usr/bin/chromium is a shell wrapper.
    for candidate in ("/usr/lib/chromium/chromium",):
        if os.access(candidate, os.X_OK):
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "no Chromium found (apt-get install chromium, or set ROUTER_TEST_CHROMIUM): "
            "the dashboard's browser tests need one"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watch:
    """What went wrong on a page: console errors, script errors, failed
    requests, error answers."""

    problems: list[str] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)

    def expect(self, status: int) -> None:
        self.expected.add(status)

    def check(self) -> None:
        allowed = [f"status of {s}" for s in self.expected]
        real = [p for p in self.problems if not any(a in p for a in allowed)]
        assert not real, "the page reported problems:\n" + "\n".join(real)


@dataclass
class Dashboard:
    url: str
    page: Page
    watch: Watch

    def login(self) -> None:
        self.page.goto(self.url + "/ui/login")
        self.page.fill("#token", TOKEN)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.url + "/ui")


@pytest.fixture()
def fast_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages refresh every second and the sampler reads every half second,
    so a test sees both work without waiting minutes."""
    monkeypatch.setattr(router.web.ui.handlers, "REFRESH_SECONDS", 1)
    monkeypatch.setattr(router.web.ui.history, "SAMPLE_EVERY", 0.5)


@pytest.fixture()
def scene(clean_redis: str, bot: Bot, tmp_path: Path, fast_refresh: None) -> Iterator[Scene]:
    routes = scene_routes(tmp_path, bot.url)
    client = redis_sync.Redis.from_url(clean_redis)
    server = serve(clean_redis, routes, admin_token=TOKEN, run_workers=True)
    try:
        yield Scene(server.url, bot, client)
    finally:
        server.stop()
        client.close()


@pytest.fixture()
def dashboard(browser: Browser, scene: Scene) -> Iterator[Dashboard]:
    """A fresh browser context (no cookies) on the scene's router, watched."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch()
    page.on("console", lambda m: m.type == "error" and watch.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: watch.problems.append(f"script error: {e}"))

    def failed(request: Request) -> None:
        failure = request.failure
        # Cancelled by the browser itself: a refresh or the favicon still
        # loading when the page navigates (a form was sent). The server's
        # failures show as other errors (refused, reset, empty) or as an
        # answer >= 400.
        if failure == "net::ERR_ABORTED":
            return
        watch.problems.append(f"request failed: {request.url} {failure}")

    page.on("requestfailed", failed)
    page.on(
        "response",
        lambda r: r.status >= 400 and watch.problems.append(f"{r.url}: status of {r.status}"),
    )
    try:
        yield Dashboard(scene.url, page, watch)
        watch.check()
    finally:
        context.close()

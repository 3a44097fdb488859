"""docs/dashboard.png and docs/dashboard-destination.png: the dashboard of
a real router after a few minutes of traffic, photographed by the same
headless Chromium as the browser tests.

    .venv/bin/python -m tests.browser.screenshot [--minutes 4]

Nothing is staged in Redis by hand: a real router (create_app, workers on)
delivers to a real bot on loopback; the bot has an outage for `chatbot`
in the middle, a few messages it always refuses (dead letters, one blocked
key of `alerts`), and `crm` is paused near the end, so its backlog grows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from router.redis.embedded import EmbeddedRedis
from tests.browser.conftest import chromium_executable
from tests.support import ROOT
from tests.support.bot import Answer, serving_bot
from tests.support.servers import serve

TOKEN = "screenshot"
POISON = {"<script>alert('hi')</script>", "pedido #A-1042 ✓", "ALERT disk /var 97%"}
NAMES = ["Ana", "Luis", "Marta", "Jorge", "Sofía", "Pablo", "Lucía", "Diego"]
TEXTS = [
    "Hola!",
    "¿Tienen envío a Madrid?",
    "Gracias!",
    "Quiero cambiar mi pedido",
    "¿A qué hora abren?",
]


def routes(directory: Path, bot_url: str) -> Path:
    def destination(**retry: Any) -> dict[str, Any]:
        return {
            "plugin": "chatbot",
            "url": bot_url,
            "ordering_key": "wa_id",
            "max_in_flight": 16,
            "timeout": "3s",
            "retry": {"initial": "200ms", "factor": 2, "max_delay": "4s", **retry},
        }

    fields = {"mensaje": "string", "wa_id": "string"}
    config = {
        "routes": [
            {"path": "/v1/whatsapp", "destinations": ["chatbot", "crm"], "fields": fields},
            {"path": "/v1/alerts", "destinations": ["alerts"], "fields": fields},
        ],
        "destinations": {
            "chatbot": destination(max_attempts=15),
            "crm": destination(max_attempts=15),
            "alerts": destination(max_attempts=3, on_exhausted="block"),
        },
    }
    path = directory / "routes.yaml"
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4.0)
    minutes = parser.parse_args().minutes
    work = Path(tempfile.mkdtemp(prefix="router-screenshot-"))
    redis = EmbeddedRedis(work / "valkey", appendonly=False)
    redis.start()
    start = time.monotonic()
    outage = threading.Event()

    def decide(message: dict[str, Any], n: int) -> Answer:
        if message.get("mensaje") in POISON:
            return Answer(422, {"status": "error", "error": "cannot parse order reference"})
        if outage.is_set() and message.get("wa_id", "").startswith("44"):
            return Answer(503, {"status": "error", "error": "bot restarting"})
        return Answer()

    try:
        with serving_bot() as bot:
            bot.decide = decide
            bot.latency = (0.02, 0.25)
            server = serve(redis.url, routes(work, bot.url), admin_token=TOKEN, run_workers=True)
            try:
                traffic(server.url, start, minutes * 60, outage)
                photograph(server.url)
            finally:
                server.stop()
    finally:
        redis.stop()


def traffic(url: str, start: float, seconds: float, outage: threading.Event) -> None:
    rng = random.Random(10)
    paused = False
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in itertools.count():
            t = time.monotonic() - start
            if t > seconds:
                return
            outage.set() if 0.35 * seconds < t < 0.5 * seconds else outage.clear()
            if not paused and t > 0.8 * seconds:
                client.post(
                    "/admin/destinations/crm/pause", headers={"authorization": f"Bearer {TOKEN}"}
                )
                paused = True
            # Busier in waves: 4 to 14 messages a second.
            per_second = 9 + 5 * math.sin(t / seconds * 2 * math.pi * 1.5)
            # Now and then one the bot always refuses: a dead letter.
            text = (
                rng.choice(TEXTS)
                if i % 150
                else rng.choice(["pedido #A-1042 ✓", "<script>alert('hi')</script>"])
            )
            key = f"44{rng.randrange(10**9, 10**9 + 60)}"
            client.post(
                "/v1/whatsapp", json={"mensaje": text, "wa_id": key, "from": rng.choice(NAMES)}
            )
            if i % 40 == 0:
                alert = "ALERT disk /var 97%" if i == 400 else f"deploy {i} finished"
                client.post("/v1/alerts", json={"mensaje": alert, "wa_id": "ops-eu-west"})
            time.sleep(1 / per_second)


def photograph(url: str) -> None:
    executable = chromium_executable()
    assert executable, "no Chromium: apt-get install chromium"
    docs = ROOT / "docs"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 520}, color_scheme="light")
        page.goto(url + "/ui/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(url + "/ui")
        page.screenshot(path=str(docs / "dashboard.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.goto(url + "/ui/destinations/chatbot")
        page.locator("#dead details.body").first.evaluate("d => d.open = true")
        page.screenshot(path=str(docs / "dashboard-destination.png"))
        browser.close()
    print("wrote docs/dashboard.png, docs/dashboard-destination.png")


if __name__ == "__main__":
    main()

"""Secrets never leave (router.ops.redaction): a destination echoing the
request's Authorization header in its error answer (JSON-escaped,
percent-encoded, base64) puts none of its forms in the log, the dead
letters of the admin API, the dashboard or `router status` / `router dead`,
all real processes; `router check` and config errors name the variable."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from tests.support.bot import EchoingBot, serving_echoing_bot
from tests.support.processes import RouterProcess, run_cli
from tests.support.servers import wait_until

# A quote and a backslash (JSON and repr escape them), a '/' and a '+'
# (percent-encoding and base64 write them otherwise).
TOKEN = 'Q"UOTED\\s3cret/9f+x'
PASSWORD = "pa.ss~w0rd-7c1e"  # as a URL's userinfo takes it unencoded
ADMIN = "admin-token-for-redaction"
HEADERS = {"authorization": f"Bearer {ADMIN}"}

ROUTES = """\
routes:
  - path: /v1/store_message
    destinations: [echoed, held]
    fields: {{mensaje: string, wa_id: string}}
  - path: /v1/basic
    destinations: [basic]
x-dest: &dest
  plugin: chatbot
  ordering_key: wa_id
  circuit_breaker: {{enabled: false}}
  timeout: 2s
  lease: 5s
destinations:
  echoed:
    <<: *dest
    url: "{bot}?token=${{BOT_TOKEN}}"
    headers: {{Authorization: "Bearer ${{BOT_TOKEN}}"}}
    retry: {{max_attempts: 1}}
  held:
    <<: *dest
    url: "{bot}?token=${{BOT_TOKEN}}"
    headers: {{Authorization: "Bearer ${{BOT_TOKEN}}"}}
    retry: {{initial: 60s, max_delay: 60s, jitter: 0}}
  basic:
    <<: *dest
    url: "http://robot:${{BOT_PASSWORD}}@{host}/bot"
    retry: {{max_attempts: 1}}
"""


def forms_of_secrets() -> set[str]:
    """The forms a leak would take in the texts below."""
    bearer, basic = f"Bearer {TOKEN}", f"robot:{PASSWORD}"
    found = {TOKEN, PASSWORD, json.dumps(TOKEN)[1:-1], quote(TOKEN, safe=""), quote_plus(TOKEN)}
    for value in (TOKEN, bearer, basic):
        found.add(base64.b64encode(value.encode()).decode().rstrip("="))
        found.add(base64.urlsafe_b64encode(value.encode()).decode().rstrip("="))
    return found


@pytest.fixture()
def echoing_bot() -> Iterator[EchoingBot]:
    with serving_echoing_bot() as b:
        yield b


def test_a_destination_echoing_its_secrets_leaks_none_of_them(
    tmp_path: Path, echoing_bot: EchoingBot, clean_redis: str
) -> None:
    bot = echoing_bot.url
    host = bot.removeprefix("http://").removesuffix("/bot")
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(bot=bot, host=host))
    router = RouterProcess(
        tmp_path / "router.log",
        die_with_parent=True,
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_ADMIN_TOKEN=ADMIN,
        BOT_TOKEN=TOKEN,
        BOT_PASSWORD=PASSWORD,
    ).start()
    try:
        for form in EchoingBot.FORMS:
            answer = httpx.post(
                router.url + "/v1/store_message", json={"mensaje": form, "wa_id": form}
            )
            assert answer.status_code == 200, answer.text
        assert (
            httpx.post(router.url + "/v1/basic", json={"mensaje": "json", "wa_id": "1"}).status_code
            == 200
        )

        def figures() -> dict[str, dict[str, int]]:
            return httpx.get(router.url + "/admin/destinations", headers=HEADERS).json()

        wait_until(
            lambda: (
                (f := figures())["echoed"]["dead"] == 4
                and f["held"]["delayed"] == 4
                and f["basic"]["dead"] == 1
            ),
            what="every message failed once on each destination",
        )
        shown = {"log": router.log_text()}
        for name in ("echoed", "basic"):
            dead = httpx.get(f"{router.url}/admin/destinations/{name}/dead", headers=HEADERS)
            shown[f"GET /admin/destinations/{name}/dead"] = dead.text
            page = httpx.get(f"{router.url}/ui/destinations/{name}", headers=HEADERS)
            assert page.status_code == 200
            shown[f"/ui/destinations/{name}"] = page.text
        errors = [
            d["error"]
            for name in ("echoed", "basic")
            for d in json.loads(shown[f"GET /admin/destinations/{name}/dead"])["dead"]
        ]
        # Still telling what happened, with the secrets starred out (the
        # basic one: the Basic credentials of the URL's userinfo).
        assert len(errors) == 5, errors
        assert all("HTTP 500" in e and "denied" in e and "***" in e for e in errors), errors
        # The operator's commands, where the variables are not set.
        command = ("--routes", str(routes))
        for form in EchoingBot.FORMS:
            status = run_cli(*command, "status", "held", form, REDIS_URL=clean_redis)
            assert status.returncode == 0 and "denied" in status.stdout, status.stderr
            shown[f"router status held {form}"] = status.stdout
        listed = run_cli(*command, "dead", "list", "echoed", "--json", REDIS_URL=clean_redis)
        assert listed.returncode == 0 and listed.stdout.count("\n") == 4, listed.stderr
        shown["router dead list echoed --json"] = listed.stdout
        table = run_cli(*command, "dead", "list", "echoed", REDIS_URL=clean_redis)
        assert table.returncode == 0, table.stderr
        shown["router dead list echoed"] = table.stdout
    finally:
        router.terminate()

    assert echoing_bot.echoed, "the bot echoed nothing"
    for where, text in shown.items():
        for leaked in forms_of_secrets() | echoing_bot.echoed:
            assert leaked not in text, f"{where} shows {leaked!r}"


def test_check_and_config_errors_name_the_variable_never_its_value(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    good = ROUTES.format(bot="http://127.0.0.1:9/bot", host="127.0.0.1:9")
    env = {"BOT_TOKEN": TOKEN, "BOT_PASSWORD": PASSWORD}
    routes.write_text(good)
    check = run_cli("--routes", str(routes), "check", cwd=tmp_path, **env)
    assert check.returncode == 0, check.stderr
    assert "-> http://127.0.0.1:9/bot?token=${BOT_TOKEN}, " in check.stdout
    assert "-> http://robot:***@127.0.0.1:9/bot, " in check.stdout

    # A URL the loader refuses is quoted in the error: with the variable.
    routes.write_text(good.replace("127.0.0.1:9/bot?", "127.0.0.1:99999/bot?", 1))
    refused = run_cli("--routes", str(routes), "check", cwd=tmp_path, **env)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "'http://127.0.0.1:99999/bot?token=${BOT_TOKEN}'" in line, line
    for text in (check.stdout + check.stderr, line):
        for leaked in forms_of_secrets() | {repr(TOKEN)[1:-1]}:
            assert leaked not in text, leaked

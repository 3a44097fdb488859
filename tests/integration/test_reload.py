"""Live routes.yaml (router.runtime.reload): the router's real app, in-process with
its workers, watching its routes file; real bots, a real Redis-compatible
server. A reload is waited for by the reloader's own counters, never by a
sleep. (SIGHUP to real processes: tests/process/test_reload.py.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import yaml
from redis.asyncio import Redis as AsyncRedis

from router.config import ConfigError
from router.config.loading import load
from router.config.settings import Settings
from router.queue import orphans
from router.queue.keys import DestinationKeys
from router.runtime.reload import Reloader
from router.web.app import create_app
from router.web.state import RouterState
from tests.support.bot import Answer, check_order, serving_bot
from tests.support.messages import assert_refused
from tests.support.processes import run_cli
from tests.support.routes import STORE
from tests.support.servers import ServerThread, wait_until

AUTH = {"Authorization": "Bearer admin-secret"}
FIELDS = {"mensaje": "string", "wa_id": "string"}
QUICK_RETRY = {"initial": "50ms", "factor": 2, "max_delay": "200ms", "jitter": 0.1}


def destination(url: str, **settings: Any) -> dict[str, Any]:
    return {
        "plugin": "chatbot",
        "url": url,
        "ordering_key": "wa_id",
        "max_in_flight": 16,
        "timeout": "2s",
        "lease": "5s",
        "retry": QUICK_RETRY,
        **settings,
    }


def routes(**paths: str) -> list[dict[str, Any]]:
    """routes(v1="chatbot") -> a route /v1 to chatbot, with the test fields."""
    return [{"path": f"/{p}", "destinations": [d], "fields": FIELDS} for p, d in paths.items()]


def write(path: Path, config: dict[str, Any], rename: bool = True) -> None:
    """Write routes.yaml as editors do: a new file renamed over the old one
    (vim, sed -i), or in place (`rename=False`)."""
    text = json.dumps(config, indent=2)  # JSON is YAML
    if rename:
        new = path.with_name(path.name + ".new")
        new.write_text(text)
        os.replace(new, path)
    else:
        with open(path, "w") as fh:
            fh.write(text)


def chatbot_only(url: str, **settings: Any) -> dict[str, Any]:
    return {
        "routes": [{"path": STORE, "destinations": ["chatbot"], "fields": FIELDS}],
        "destinations": {"chatbot": destination(url, **settings)},
    }


@contextmanager
def watched_router(
    redis_url: str, routes_file: Path, settle: float = 0.2
) -> Iterator[tuple[str, Reloader]]:
    """The router's app with workers, watching `routes_file` every 50 ms
    and applying a change once it held still `settle` s; yields its URL and
    its reloader."""
    started: list[RouterState] = []

    async def on_started(state: RouterState) -> None:
        started.append(state)

    settings = Settings(
        routes_file=str(routes_file),
        redis_url=redis_url,
        run_workers=True,
        shutdown_grace=5.0,
        admin_token="admin-secret",
        routes_poll=0.05,
        reload_settle=settle,
    )
    with ServerThread(create_app(settings, load(str(routes_file)), on_started)).start() as server:
        wait_until(lambda: bool(started), what="the lifespan")
        reloader = started[0].reloader
        assert reloader is not None
        # The first look compares the file with what was loaded: no reload.
        wait_until(lambda: reloader.looks >= 1, what="the first look at the file")
        assert reloader.reloads == 0
        yield server.url, reloader


def reloaded(reloader: Reloader, count: int) -> None:
    wait_until(lambda: reloader.reloads >= count, timeout=30, what=f"reload #{count}")


def post(url: str, path: str, mensaje: str, key: str = "k") -> httpx.Response:
    return httpx.post(url + path, json={"mensaje": mensaje, "wa_id": key}, timeout=10)


def test_a_destination_and_a_retry_change_take_effect_without_a_restart(
    clean_redis: str, tmp_path: Path
) -> None:
    with serving_bot() as failing, serving_bot() as healthy:
        failing.decide = lambda m, n: Answer(500, {"status": "error"})
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(failing.url))
        redis = redis_sync.Redis.from_url(clean_redis)
        with watched_router(clean_redis, file) as (url, reloader):
            assert post(url, STORE, "stuck").status_code == 200
            wait_until(lambda: len(failing.attempts_of("stuck")) >= 2, what="retries")
            # Retry forever was the policy: now two attempts, then a dead letter.
            write(file, chatbot_only(failing.url, retry={**QUICK_RETRY, "max_attempts": 2}))
            reloaded(reloader, 1)
            wait_until(lambda: redis.llen(DestinationKeys("chatbot").dead) == 1, what="dead")
            # And the URL: the next message goes to the healthy bot.
            write(file, chatbot_only(healthy.url, retry={**QUICK_RETRY, "max_attempts": 2}))
            reloaded(reloader, 2)
            assert post(url, STORE, "fine").status_code == 200
            wait_until(lambda: healthy.acked_messages() == ["fine"], what="delivery to the new url")
            assert failing.attempts_of("fine") == []
        redis.close()


def test_routes_added_changed_and_removed(clean_redis: str, tmp_path: Path) -> None:
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(bot.url))
        with watched_router(clean_redis, file) as (url, reloader):
            assert_refused(post(url, "/v2/new", "x"), 404, "no route")
            config = chatbot_only(bot.url)
            config["routes"][0]["max_body"] = "100B"
            config["routes"] += routes(**{"v2/new": "chatbot"})
            write(file, config, rename=False)  # in place, this time
            reloaded(reloader, 1)
            assert post(url, "/v2/new", "via the new route").status_code == 200
            r = httpx.post(url + STORE, json={"mensaje": "x" * 100, "wa_id": "k"})
            assert_refused(r, 413, "too large", "100")  # the changed route's new limit
            # Removed: 404 with the usual JSON body; the other route goes on.
            write(file, {**config, "routes": routes(**{"v2/new": "chatbot"})})
            reloaded(reloader, 2)
            assert_refused(post(url, STORE, "gone"), 404, "no route")
            assert post(url, "/v2/new", "still served").status_code == 200
            wait_until(
                lambda: bot.acked_messages() == ["via the new route", "still served"],
                what="deliveries",
            )
            # The new route is in the OpenAPI document too.
            assert "/v2/new" in httpx.get(url + "/schema/openapi.json").json()["paths"]


def test_messages_posted_while_the_file_is_rewritten_are_delivered_once_each_in_order(
    clean_redis: str, tmp_path: Path
) -> None:
    """Ingest never stops, the destination is restarted with new settings
    (its url moving between two bots) several times: per key, every message
    is acknowledged exactly once, in the order it was posted."""
    with serving_bot() as one, serving_bot() as two:
        for bot in (one, two):
            bot.latency = (0.0, 0.01)
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(one.url))
        keys = [f"key{i}" for i in range(8)]
        sent: dict[str, list[str]] = {k: [] for k in keys}
        done_rewriting = threading.Event()

        async def post_until_done(url: str) -> None:
            async def one_key(client: httpx.AsyncClient, key: str) -> None:
                n = 0
                while not done_rewriting.is_set() or n < 20:
                    message = f"{key}-{n}"
                    r = await client.post(STORE, json={"mensaje": message, "wa_id": key})
                    assert r.status_code == 200, r.text
                    sent[key].append(message)
                    n += 1

            limits = httpx.Limits(max_connections=len(keys), keepalive_expiry=1.0)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
                await asyncio.gather(*(one_key(client, k) for k in keys))

        with (
            watched_router(clean_redis, file) as (url, reloader),
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            posting = pool.submit(asyncio.run, post_until_done(url))
            try:
                variants = [
                    chatbot_only(two.url, max_in_flight=4),
                    chatbot_only(one.url, max_in_flight=16, timeout="3s"),
                    {
                        **chatbot_only(two.url),
                        "routes": routes(v1="chatbot", **{"v1/store_message": "chatbot"}),
                    },
                    chatbot_only(one.url, max_in_flight=2),
                    chatbot_only(two.url, lease="6s"),
                ]
                for n, config in enumerate(variants, 1):
                    wait_until(lambda n=n: sum(map(len, sent.values())) >= 40 * n, what="posts")
                    write(file, config, rename=n % 2 == 0)
                    reloaded(reloader, n)
            finally:
                done_rewriting.set()
            posting.result(timeout=120)
            total = sum(map(len, sent.values()))

            def acked() -> list[Any]:
                return sorted(one.acknowledged() + two.acknowledged(), key=lambda r: r.at)

            wait_until(lambda: len(acked()) >= total, timeout=60, what="every delivery")
            lost, duplicates = check_order(sent, acked())
            assert (lost, duplicates) == (0, 0)
            assert len(acked()) == total
            assert one.max_in_flight_per_key <= 1 and two.max_in_flight_per_key <= 1
            assert one.acknowledged() and two.acknowledged()  # both urls were used


def test_an_invalid_file_is_logged_once_and_the_running_config_kept(
    clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(bot.url))
        with (
            caplog.at_level(logging.INFO, logger="router.reload"),
            watched_router(clean_redis, file) as (url, reloader),
        ):
            broken = chatbot_only(bot.url, retry={**QUICK_RETRY, "initial": "soon"})
            write(file, broken)
            with pytest.raises(ConfigError) as refused:
                load(str(file))  # what `router check` prints, after "router: config error: "

            def errors() -> list[str]:
                return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

            wait_until(lambda: bool(errors()), what="the error line")
            looks = reloader.looks
            wait_until(lambda: reloader.looks >= looks + 10, what="ten more looks at the file")
            assert errors() == [
                f"config error: {refused.value}; not reloaded, the running config is kept"
            ]
            assert "\n" not in errors()[0]
            assert reloader.reloads == 0 and reloader.last_error is not None
            # The old config goes on serving and delivering.
            assert post(url, STORE, "still works").status_code == 200
            wait_until(lambda: bot.acked_messages() == ["still works"], what="delivery")
            # Fixed: applied.
            write(file, chatbot_only(bot.url, max_in_flight=8))
            reloaded(reloader, 1)
            assert reloader.last_error is None
            assert len(errors()) == 1


def test_a_file_written_slowly_is_applied_only_whole_and_once(
    clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that writes half of the new file in place, pauses 1.5 s
    (longer than the default poll, 1 s; shorter than the settle time, here
    3 s for a margin on a loaded machine) and then finishes: its prefix is
    valid but lacks a route present in both files. Requests to that route
    never answer 404 meanwhile, and the whole file is applied once (a
    prefix applied made it answer 404 until the rest arrived)."""
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        kept, other, new = STORE, "/v1/other", "/v1/new"
        # Destinations first: the routes written before the pause make a
        # valid file by themselves, as a YAML file cut at a line does.
        head = yaml.safe_dump({"destinations": {"chatbot": destination(bot.url)}}) + "routes:\n"

        def route(path: str) -> str:
            return yaml.safe_dump([{"path": path, "destinations": ["chatbot"], "fields": FIELDS}])

        file.write_text(head + route(kept) + route(other))
        first, rest = head + route(new), route(kept)  # what the writer writes, then the rest
        prefix = tmp_path / "prefix.yaml"
        prefix.write_text(first)
        assert [r.path for r in load(str(prefix)).routes] == [new]  # valid without `kept`
        answers: list[int] = []
        stop = threading.Event()

        def post_steadily() -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                n = 0
                while not stop.is_set():
                    r = client.post(kept, json={"mensaje": f"m{n}", "wa_id": f"k{n % 4}"})
                    answers.append(r.status_code)
                    n += 1

        with (
            caplog.at_level(logging.INFO, logger="router.reload"),
            watched_router(clean_redis, file, settle=3.0) as (url, reloader),
        ):
            poster = threading.Thread(target=post_steadily)
            poster.start()
            try:
                wait_until(lambda: len(answers) >= 20, what="posting")
                with open(file, "w") as fh:  # in place: truncated, then written
                    fh.write(first)
                    fh.flush()
                    time.sleep(1.5)  # the writer pauses (the scenario, not a wait)
                    fh.write(rest)
                reloaded(reloader, 1)
                assert httpx.post(url + new, json={"mensaje": "n", "wa_id": "k"}).status_code == 200
                looks = reloader.looks
                wait_until(lambda: reloader.looks >= looks + 5, what="more looks at the file")
            finally:
                stop.set()
                poster.join(30)
            assert Counter(answers) == {200: len(answers)}, Counter(answers)
            assert reloader.reloads == 1
            assert_refused(post(url, other, "removed"), 404)  # the whole file applied
            applied = [
                m for r in caplog.records if (m := r.getMessage()).startswith("file changed")
            ]
            assert applied == [
                f"file changed: reloaded {file}: routes added: {new}; routes removed: {other}"
            ], applied


def test_a_refused_file_put_back_or_fixed_says_so(
    clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused file that is then put back as it was, or fixed, ends with
    a line saying the file is in force again, not with the refusal."""
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        good = chatbot_only(bot.url)
        write(file, good)
        with (
            caplog.at_level(logging.INFO, logger="router.reload"),
            watched_router(clean_redis, file) as (url, reloader),
        ):

            def lines() -> list[str]:
                return [r.getMessage() for r in caplog.records if str(file) in r.getMessage()]

            write(file, chatbot_only(bot.url, retry={**QUICK_RETRY, "initial": "soon"}))
            wait_until(lambda: reloader.last_error is not None, what="the refusal")
            write(file, good)  # put back
            wait_until(lambda: reloader.last_error is None, what="valid again")
            assert lines()[-1] == f"file changed: {file} is valid again, as the running config"
            write(file, chatbot_only(bot.url, retry={**QUICK_RETRY, "initial": "soon"}))
            wait_until(lambda: reloader.last_error is not None, what="the refusal")
            write(file, chatbot_only(bot.url, max_in_flight=8))  # fixed
            reloaded(reloader, 1)
            assert reloader.last_error is None
            assert lines()[-1] == (
                f"file changed: reloaded {file}: destinations changed: chatbot"
            ), lines()
            assert post(url, STORE, "m").status_code == 200


def test_a_shards_change_is_refused_whole(
    clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(bot.url))
        with (
            caplog.at_level(logging.INFO, logger="router.reload"),
            watched_router(clean_redis, file) as (url, reloader),
        ):
            config = chatbot_only(bot.url, shards=2)
            config["routes"] += routes(**{"v2/new": "chatbot"})
            write(file, config)
            wait_until(lambda: reloader.last_error is not None, what="the refusal")
            assert "shards cannot change" in reloader.last_error
            # Nothing of it applied: not the new route either.
            assert_refused(post(url, "/v2/new", "x"), 404)
            assert post(url, STORE, "on the old config").status_code == 200
            wait_until(lambda: bot.acked_messages() == ["on the old config"], what="delivery")


def test_a_removed_destination_keeps_its_queue_and_shows_as_orphaned(
    clean_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving_bot() as bot, serving_bot() as sms:
        sms.decide = lambda m, n: Answer(503, {"status": "error"})  # down for now
        file = tmp_path / "routes.yaml"
        both = {
            "routes": routes(**{"v1/store_message": "chatbot", "v1/sms": "sms"}),
            "destinations": {
                "chatbot": destination(bot.url),
                "sms": destination(sms.url, retry={**QUICK_RETRY, "initial": "1s", "max_delay": 2}),
            },
        }
        write(file, both)
        redis = redis_sync.Redis.from_url(clean_redis)
        sms_keys = DestinationKeys("sms")

        def held() -> int:
            lanes = redis.scan_iter(match=sms_keys.lane_prefix + "*")
            return sum(int(redis.llen(k)) for k in lanes)

        def orphaned(configured: list[str]) -> list[str]:
            async def look() -> list[str]:
                client = AsyncRedis.from_url(clean_redis)
                try:
                    return await orphans.orphaned_destinations(client, configured)
                finally:
                    await client.aclose()

            return asyncio.run(look())

        with (
            caplog.at_level(logging.INFO, logger="router.reload"),
            watched_router(clean_redis, file) as (url, reloader),
        ):
            for i in range(3):
                assert post(url, "/v1/sms", f"sms-{i}", key=f"k{i}").status_code == 200
            wait_until(lambda: len(sms.received) >= 3, what="first attempts")
            assert held() == 3
            assert orphaned(["chatbot"]) == ["sms"]  # known, would be orphaned if removed

            write(file, chatbot_only(bot.url))
            reloaded(reloader, 1)
            assert_refused(post(url, "/v1/sms", "x"), 404)
            assert held() == 3  # kept, untouched
            assert orphaned(["chatbot"]) == ["sms"]
            wait_until(
                lambda: any("orphaned destinations" in r.getMessage() for r in caplog.records),
                what="the orphan warning",
            )
            [warning] = [r for r in caplog.records if "orphaned destinations" in r.getMessage()]
            assert warning.levelno == logging.WARNING and "sms" in warning.getMessage()
            status = httpx.get(url + "/admin/destinations", headers=AUTH).json()
            assert status["chatbot"]["orphaned"] is False
            assert status["sms"]["orphaned"] is True
            assert (
                status["sms"]["ready"] + status["sms"]["delayed"] + status["sms"]["in_flight"] == 3
            )
            # `router status` and the metrics show it too.
            done = run_cli("--routes", str(file), "status", "--json", REDIS_URL=clean_redis)
            assert done.returncode == 0, done.stderr
            shown = json.loads(done.stdout)
            assert shown["sms"]["orphaned"] is True and shown["sms"]["messages"] == 3
            assert shown["chatbot"]["orphaned"] is False
            scraped = httpx.get(url + "/metrics").text
            assert 'router_destination_orphaned{destination="sms"} 1.0' in scraped
            assert 'router_destination_orphaned{destination="chatbot"} 0.0' in scraped
            attempts = len(sms.received)
            looks = reloader.looks
            wait_until(lambda: reloader.looks >= looks + 5, what="more looks")
            time.sleep(2.5)  # past sms's longest backoff (2 s): a delivery would be in
            assert len(sms.received) == attempts  # nothing delivers an orphan
            assert held() == 3

            # Added back (the sms gateway is up again): what it held goes out.
            sms.decide = lambda m, n: Answer()
            write(file, both)
            reloaded(reloader, 2)
            wait_until(lambda: len(sms.acknowledged()) == 3, what="the orphan's messages")
            # The bot answers before the router's ack reaches Redis.
            wait_until(lambda: orphaned(["chatbot"]) == [], what="the acks in Redis")
            assert orphaned(["chatbot", "sms"]) == []
            assert "sms" not in [
                n
                for n, s in httpx.get(url + "/admin/destinations", headers=AUTH).json().items()
                if s["orphaned"]
            ]
        redis.close()


def test_a_reload_says_what_is_missing_is_missing_in_this_process(
    clean_redis: str, tmp_path: Path
) -> None:
    """A plugin installed, or a variable exported, after the process
    started is not seen by its reload while `router check` in the
    operator's shell sees it: the refusal says it speaks of this process."""
    with serving_bot() as bot:
        file = tmp_path / "routes.yaml"
        write(file, chatbot_only(bot.url))
        with watched_router(clean_redis, file) as (_, reloader):
            write(file, chatbot_only(bot.url, plugin="slackish"))
            wait_until(lambda: reloader.last_error is not None, what="the refusal")
            assert (
                "plugin 'slackish' is not installed in this process (installed after it "
                "started? restart it); installed: " in reloader.last_error
            )
            write(file, chatbot_only("${ROUTER_TEST_SET_LATER}/bot"))
            wait_until(lambda: "ROUTER_TEST" in (reloader.last_error or ""), what="the refusal")
            assert (
                "environment variable ROUTER_TEST_SET_LATER is not set in this process's "
                "environment (set after it started? restart it); set it or write "
                "${ROUTER_TEST_SET_LATER:-default}" in reloader.last_error
            )
            # Read from a shell (`router check`): nothing about a process.
            with pytest.raises(ConfigError) as refused:
                load(str(file))
            assert "is not set; set it" in str(refused.value)

"""GET /metrics: parsed with prometheus-client's own parser, counted against
what really happened (the bot's requests) and against Redis."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from router.web import prometheus
from tests.support.bot import Answer, Bot
from tests.support.messages import post_message
from tests.support.routes import KEYS, STORE, write_routes
from tests.support.servers import free_port, serve, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, **kwargs: object) -> Samples:
    r = httpx.get(url + "/metrics", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_count_what_happened(start_router, bot: Bot) -> None:
    # The first attempt of "flaky" fails, every other one succeeds.
    bot.decide = lambda m, n: (
        Answer(500) if m.get("mensaje") == "flaky" and not bot.attempts_of("flaky") else Answer()
    )
    router = start_router(bot.url)
    # The instruments are this test process's: count what this test adds.
    before = scrape(router.url)
    for i in range(5):
        post_message(router.url, f"k{i}", f"m{i}")
    post_message(router.url, "kf", "flaky")
    assert router.post({"wa_id": "k0"}).status_code == 400  # no mensaje
    wait_until(lambda: len(bot.acknowledged()) == 6, what="six deliveries")
    wait_until(
        lambda: value(scrape(router.url), "router_queue_messages", destination="chatbot") == 0,
        what="the gauges to show the queue empty",
    )
    after = scrape(router.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("router_ingest_requests_total", route=STORE, status="200") == 6
    assert delta("router_ingest_requests_total", route=STORE, status="400") == 1
    assert delta("router_ingest_duration_seconds_count") == 7
    assert delta("router_deliveries_total", destination="chatbot", outcome="ok") == 6
    assert delta("router_deliveries_total", destination="chatbot", outcome="failed") == 1
    assert delta("router_delivery_duration_seconds_count", destination="chatbot") == 7
    assert delta("router_end_to_end_seconds_count", destination="chatbot") == 6
    # Every histogram's +Inf bucket is its count.
    assert value(after, "router_end_to_end_seconds_bucket", destination="chatbot", le="+Inf") == (
        value(after, "router_end_to_end_seconds_count", destination="chatbot")
    )
    assert value(after, "router_redis_up") == 1
    assert value(after, "router_oldest_message_age_seconds", destination="chatbot") == 0


def test_queue_gauges_match_redis(start_router, bot: Bot, redis: Redis) -> None:
    """Messages stuck behind a failing head, one dead letter, a pause: each
    gauge is what Redis holds."""
    bot.decide = lambda m, n: Answer(500) if m.get("mensaje") == "stuck" else Answer()
    router = start_router(bot.url, retry={"initial": "30s", "max_delay": "30s"}, max_in_flight=4)
    post_message(router.url, "a", "stuck")
    post_message(router.url, "a", "behind-1")
    post_message(router.url, "a", "behind-2")
    post_message(router.url, "b", "fine")
    wait_until(lambda: redis.zcard(KEYS.delayed) == 1, what="the stuck key to back off")
    wait_until(lambda: bot.acked_messages("b") == ["fine"], what="b delivered")
    redis.set(KEYS.paused, 1)  # as `router pause` does (tests/integration/test_pause.py)
    post_message(router.url, "c", "c0")
    post_message(router.url, "c", "c1")
    time.sleep(1.1)  # past the reading of the first scrape
    samples = scrape(router.url)
    gauge = {name: value(samples, name, destination="chatbot") for name in prometheus.QUEUE_GAUGES}
    assert gauge["router_queue_messages"] == 5  # messages, not keys
    assert gauge["router_delayed_keys"] == 1
    assert gauge["router_ready_keys"] == 1  # c, held by the pause
    assert gauge["router_in_flight"] == 0
    assert gauge["router_dead_letters"] == gauge["router_blocked_keys"] == 0
    assert gauge["router_destination_paused"] == 1
    assert gauge["router_destination_orphaned"] == 0  # (removed destinations: test_reload.py)
    arrived = min(
        int(redis.zrange(KEYS.heads, 0, 0, withscores=True)[0][1]),
        int(time.time() * 1000),
    )
    age = gauge["router_oldest_message_age_seconds"]
    assert 1.0 <= age <= time.time() - arrived / 1000 + 0.5


def test_queue_gauges_read_redis_at_most_once_a_second(
    start_router, bot: Bot, redis: Redis
) -> None:
    router = start_router(bot.url, workers=False)
    scrape(router.url)
    redis.config_resetstat()
    started = time.monotonic()
    scrapes = 0
    with httpx.Client(base_url=router.url) as client:
        while time.monotonic() - started < 2.5:  # scraped as fast as it answers
            assert client.get("/metrics").status_code == 200
            scrapes += 1
    elapsed = time.monotonic() - started
    reads = int(redis.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))
    # One pipeline per reading (one HMGET in it), at most one reading a second.
    assert scrapes > 10
    assert 2 <= reads <= math.ceil(elapsed) + 1, (reads, scrapes, elapsed)


def test_metrics_token_and_switch(clean_redis: str, tmp_path: Path, bot: Bot) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    with serve(clean_redis, routes, metrics_token="s3cret") as server:
        denied = httpx.get(server.url + "/metrics")
        assert denied.status_code == 401
        assert "ROUTER_METRICS_TOKEN" in denied.json()["error"]
        assert "s3cret" not in denied.text
        wrong = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        scrape(server.url, headers={"Authorization": "Bearer s3cret"})
    with serve(clean_redis, routes, metrics=False) as server:
        assert httpx.get(server.url + "/metrics").status_code == 404


def test_a_scrape_without_redis_still_answers(tmp_path: Path, bot: Bot) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with serve(dead_redis, routes, ingest_deadline=0.5) as server:
        samples = scrape(server.url)
    assert value(samples, "router_redis_up") == 0
    assert not any(name == "router_queue_messages" for name, _ in samples)


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    text = README.read_text()
    section = text[text.index("### Metrics") : text.index("### Logs")]
    documented = set(re.findall(r"^\| `(router_\w+)` \|", section, re.MULTILINE))
    assert documented == set(prometheus.family_names())

"""A webhook's W3C trace context reaches the bot on every attempt."""

from __future__ import annotations

from tests.support.bot import Answer, Bot
from tests.support.servers import wait_until

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_and_tracestate_are_sent_on_every_attempt(start_router, bot: Bot) -> None:
    bot.decide = lambda m, n: Answer(status=500) if n == 0 else Answer()
    router = start_router(bot.url)
    headers = {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"}
    assert router.post({"mensaje": "traced", "wa_id": "1"}, headers=headers).status_code == 200
    assert router.post({"mensaje": "plain", "wa_id": "1"}).status_code == 200
    bad = {"traceparent": "00-not-a-trace-01", "tracestate": "a=b"}
    assert router.post({"mensaje": "bad", "wa_id": "1"}, headers=bad).status_code == 200
    wait_until(lambda: len(bot.acknowledged()) >= 3, what="three deliveries")
    traced = bot.attempts_of("traced")
    assert len(traced) == 2  # the failed attempt and its retry
    for attempt in traced:
        assert attempt.headers["traceparent"] == TRACEPARENT
        assert attempt.headers["tracestate"] == "rojo=00f067aa0ba902b7"
    for name in ("plain", "bad"):
        (attempt,) = bot.attempts_of(name)
        assert "traceparent" not in attempt.headers and "tracestate" not in attempt.headers

"""Fast pure-logic tests: backoff, giving up, durations and sizes, the
chatbot's error bodies, Retry-After parsing."""

from __future__ import annotations

import email.utils
import math
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from router_chatbot import error_in_body

from router.config import RetryPolicy, parse_duration, parse_size
from router.delivery.retry import MAX_RETRY_AFTER, Decision, backoff_seconds, decide
from router.plugin.http_sink import parse_retry_after
from router.queue.lanes import Outcome

EXACT = RetryPolicy(initial=1.0, factor=2.0, max_delay=60.0, jitter=0.0)  # type: ignore[arg-type]


def policy(**kwargs: float | int | str | None) -> RetryPolicy:
    return RetryPolicy(**{"initial": 1.0, "factor": 2.0, "max_delay": 60.0, **kwargs})  # type: ignore[arg-type]


# -- backoff_seconds -----------------------------------------------------


def test_backoff_doubles_from_initial_and_stops_at_max_delay() -> None:
    delays = [backoff_seconds(EXACT, n) for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_other_factor_and_initial() -> None:
    p = policy(initial=0.05, factor=3, max_delay=1, jitter=0)
    assert [round(backoff_seconds(p, n), 6) for n in range(1, 5)] == [0.05, 0.15, 0.45, 1.0]
    flat = policy(initial=5, factor=1, max_delay=60, jitter=0)
    assert {backoff_seconds(flat, n) for n in range(1, 50)} == {5.0}


def test_backoff_before_the_first_failure_is_initial() -> None:
    assert backoff_seconds(EXACT, 0) == 1.0


def test_backoff_after_very_many_attempts_stays_at_max_delay() -> None:
    """Retry forever is the default: attempt 5000 (days of outage) still has a delay."""
    for n in (1_000, 1_025, 5_000, 10**9):
        assert backoff_seconds(EXACT, n) == 60.0
        assert 48.0 <= backoff_seconds(policy(jitter=0.2), n) <= 60.0


def test_backoff_jitter_stays_within_its_bounds_and_varies() -> None:
    p = policy(jitter=0.2)
    rand = random.Random(1234)
    for n in range(1, 6):
        base = 2.0 ** (n - 1)
        delays = [backoff_seconds(p, n, rand=rand) for _ in range(300)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays), (n, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.3  # it actually spreads
    capped = [backoff_seconds(p, 20, rand=rand) for _ in range(300)]
    assert all(48.0 <= d <= 60.0 for d in capped)  # never above max_delay


def test_backoff_full_jitter_is_never_negative() -> None:
    p = policy(jitter=1.0)
    rand = random.Random(7)
    delays = [backoff_seconds(p, 3, rand=rand) for _ in range(500)]
    assert all(0.0 <= d <= 8.0 for d in delays)


def test_backoff_same_seed_same_delays() -> None:
    p = policy(jitter=0.5)
    a = [backoff_seconds(p, n, rand=random.Random(5)) for n in range(1, 8)]
    b = [backoff_seconds(p, n, rand=random.Random(5)) for n in range(1, 8)]
    assert a == b


def test_retry_after_lengthens_the_backoff() -> None:
    assert backoff_seconds(EXACT, 1, retry_after=120) == 120  # longer than max_delay
    assert backoff_seconds(policy(jitter=0.5), 2, retry_after=5) == 5  # no jitter on it
    assert backoff_seconds(EXACT, 3, retry_after=4.5) == 4.5


@pytest.mark.parametrize("retry_after", [0.0, 0.3, -5.0, -math.inf, math.nan])
def test_retry_after_never_shortens_the_backoff(retry_after: float) -> None:
    """Retry-After: 0, a negative or NaN value, or a date in the past (parsed
    as 0) leave the policy's delay: a destination answering 429 with
    `Retry-After: 0` is not hammered in a loop."""
    for attempts, delay in [(1, 1.0), (3, 4.0), (9, 60.0)]:
        assert backoff_seconds(EXACT, attempts, retry_after=retry_after) == delay


def test_retry_after_is_capped() -> None:
    assert backoff_seconds(EXACT, 1, retry_after=86_400) == MAX_RETRY_AFTER
    assert backoff_seconds(EXACT, 1, retry_after=math.inf) == MAX_RETRY_AFTER
    assert MAX_RETRY_AFTER == 3600.0
    long_policy = policy(initial=7200, max_delay=7200, jitter=0)
    assert backoff_seconds(long_policy, 1, retry_after=86_400) == 7200  # the policy's own


# -- decide: the one retry decision ----------------------------------------


def exhausted(p: RetryPolicy, attempts: int, age: float) -> bool:
    return decide(p, attempts, age).gives_up


def test_default_policy_retries_forever() -> None:
    p = RetryPolicy()
    assert not exhausted(p, 10**6, 365 * 86400.0)


def test_exhausted_after_max_attempts() -> None:
    p = policy(max_attempts=3)
    assert [exhausted(p, n, 0.0) for n in range(1, 6)] == [False, False, True, True, True]
    assert exhausted(policy(max_attempts=1), 1, 0.0)


def test_exhausted_after_max_age() -> None:
    p = policy(max_age=10.0)
    assert not exhausted(p, 100, 9.99)
    assert exhausted(p, 1, 10.0)
    assert exhausted(p, 1, 11.0)


def test_exhausted_by_whichever_comes_first() -> None:
    p = policy(max_attempts=5, max_age=60.0)
    assert not exhausted(p, 4, 59.0)
    assert exhausted(p, 5, 1.0)
    assert exhausted(p, 1, 60.0)


def test_a_permanent_failure_gives_up_at_once_as_on_exhausted_says() -> None:
    """DeliveryFailed(permanent=True): no retry can succeed, so no backoff,
    whatever the policy (the default retries forever)."""
    dead = decide(RetryPolicy(), 1, 0.0, permanent=True)
    assert dead.outcome is Outcome.DEAD_LETTER and dead.rule == "permanent"
    blocked = decide(policy(on_exhausted="block"), 1, 0.0, permanent=True)  # type: ignore[arg-type]
    assert blocked.outcome is Outcome.BLOCK


def test_a_message_never_tried_gets_its_try_however_old() -> None:
    assert not exhausted(policy(max_age=10.0, max_attempts=1), 0, 10**6)


def test_the_decision_names_the_rule_and_the_outcome() -> None:
    p = policy(max_attempts=3, max_age=60.0, jitter=0)
    assert decide(p, 1, 0.0) == Decision(Outcome.RETRY, 1.0, "retrying in 1.00s")
    assert decide(p, 1, 0.0, retry_after=30) == Decision(Outcome.RETRY, 30, "retrying in 30.00s")
    dead = decide(p, 3, 0.0)
    assert dead.outcome is Outcome.DEAD_LETTER and "max_attempts (3)" in dead.reason
    old = decide(p, 1, 61.0)
    assert old.gives_up and "max_age" in old.reason
    blocked = decide(policy(max_attempts=1, on_exhausted="block"), 1, 0.0)  # type: ignore[arg-type]
    assert blocked.outcome is Outcome.BLOCK


# -- parse_duration / parse_size -----------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("10", 10.0),
        (" 10 s ", 10.0),
        ("0", 0.0),
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "bad",
    [
        *("10 parsecs", "", "s", "-1s", "1.5.2s", "10 s s", "1e3", "ten", "10sec"),
        *(None, True, False, -1, -0.5, math.nan, math.inf),
    ],
)
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_parse_duration_says_how_to_write_one() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("10 parsecs")
    assert "10 parsecs" in str(info.value) and "500ms" in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1MiB", 1024 * 1024),
        ("1mib", 1024 * 1024),
        ("1MB", 1_000_000),
        ("512KiB", 512 * 1024),
        ("512kb", 512_000),
        ("2GiB", 2 * 1024**3),
        ("1GB", 10**9),
        ("100B", 100),
        ("100", 100),
        (" 64 KiB ", 64 * 1024),
        (100, 100),
        (0, 0),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize(
    "bad", ["1 gallon", "", "1.5MiB", "-1", "MiB", "1TiB", "1 Mi B", -1, True, None, 1.5]
)
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)


# -- router_chatbot.error_in_body ----------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "error"},
        {"status": "ERROR", "error": "model overloaded"},
        {"status": " Error "},
        {"status": "fail"},
        {"status": "failed"},
        {"status": "failure"},
        {"status": 500},
        {"status": 400},
        {"ok": False},
        {"ok": False, "status": "ok"},
    ],
)
def test_error_in_body_reports_failures(payload: object) -> None:
    error = error_in_body(payload)
    assert error is not None and error.startswith("bot answered")


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "ok"},
        {"status": "success"},
        {"status": 200},
        {"status": 399},
        {"status": True},
        {"status": None},
        {"ok": True},
        {"ok": 0},
        {"error": "a field called error is not a status"},
        {},
        [],
        ["error"],
        "error",
        None,
        500,
    ],
)
def test_error_in_body_accepts_everything_else(payload: object) -> None:
    assert error_in_body(payload) is None


def test_error_in_body_names_the_status() -> None:
    assert error_in_body({"status": "failed"}) == "bot answered status 'failed'"
    assert error_in_body({"status": 503}) == "bot answered status 503"
    assert error_in_body({"ok": False}) == "bot answered ok: false"


# -- http_sink.parse_retry_after -----------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0", 0.0), (" 2.5 ", 2.5), ("120", 120.0)],
)
def test_parse_retry_after_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    "header", [None, "", "soon", "5 seconds", "Thursday", "1,5", "-3", "-5", "nan", "-inf", "inf"]
)
def test_parse_retry_after_garbage_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_parse_retry_after_http_date() -> None:
    future = datetime.now(UTC) + timedelta(seconds=30)
    wait = parse_retry_after(email.utils.format_datetime(future, usegmt=True))
    assert wait is not None and 28.0 <= wait <= 30.0
    past = datetime.now(UTC) - timedelta(hours=1)
    assert parse_retry_after(email.utils.format_datetime(past, usegmt=True)) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_parse_retry_after_never_gives_a_negative_or_nan_wait() -> None:
    for header in ("nan", "NaN", "-inf", "-0", "-1e9"):
        wait = parse_retry_after(header)
        assert wait is None or (wait == wait and wait >= 0), (header, wait)
    # A huge value is honoured by the parser and capped by the backoff.
    huge = parse_retry_after("999999999999")
    assert huge is not None and backoff_seconds(EXACT, 1, retry_after=huge) == MAX_RETRY_AFTER


def test_parse_retry_after_feeds_backoff() -> None:
    delay = backoff_seconds(EXACT, 1, retry_after=parse_retry_after("7"))
    assert delay == 7.0
    past = email.utils.formatdate(time.time() - 600, usegmt=True)
    assert backoff_seconds(EXACT, 3, retry_after=parse_retry_after(past)) == 4.0
    started = time.time()
    date = email.utils.formatdate(started + 10, usegmt=True)
    delay = backoff_seconds(EXACT, 1, retry_after=parse_retry_after(date))
    assert 8.0 <= delay <= 10.0

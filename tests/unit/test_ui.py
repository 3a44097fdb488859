"""The dashboard's pure parts: sessions, where a login may lead, the
history's rates and the charts drawn from it."""

from __future__ import annotations

import time

from router.queue.status import DestinationStatus
from router.web.ui import sessions
from router.web.ui.history import History, chart, nice_ceiling


def status(at: float, delivered: int = 0, name: str = "d") -> DestinationStatus:
    return DestinationStatus(
        name=name,
        messages=0,
        ready=0,
        in_flight=0,
        delayed=0,
        blocked=0,
        dead=0,
        oldest_age_seconds=None,
        delivered_total=delivered,
        paused=False,
        orphaned=False,
        read_at=at,
    )


def test_a_session_is_signed_by_the_token_and_expires() -> None:
    now = 1_700_000_000.0
    session = sessions.new_session("token", now)
    assert "token" not in session
    assert sessions.session_valid("token", session, now + 60)
    assert not sessions.session_valid("token", session, now + sessions.SESSION_SECONDS + 1)
    assert not sessions.session_valid("another token", session, now + 60)  # a new token ends it
    expires, mac = session.split(".")
    later = str(int(expires) + 3600)
    assert not sessions.session_valid("token", f"{later}.{mac}", now + 60)  # extended by hand
    for junk in ("", ".", "abc", f"{expires}.", f"-1.{mac}", "9" * 40 + "." + mac):
        assert not sessions.session_valid("token", junk, now)


def test_after_login_only_a_dashboard_page_is_a_destination() -> None:
    assert sessions.safe_next("/ui/destinations/chatbot?start=50") == (
        "/ui/destinations/chatbot?start=50"
    )
    for elsewhere in (
        None,
        "",
        "https://evil.example/ui",
        "//evil.example/ui",
        "/admin",
        "/ui\\..\\x",
        "/ui\nLocation: x",
        "javascript:alert(1)",
    ):
        assert sessions.safe_next(elsewhere) == "/ui"


def test_nice_ceilings() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 1.01, 3, 7, 12, 999, 1000)] == [
        1,
        0.5,
        1,
        2,
        5,
        10,
        20,
        1000,
        1000,
    ]


def test_rates_come_from_the_delivered_counter() -> None:
    history = History(every=5)
    t = time.time() - 30
    for i, delivered in enumerate((0, 50, 100, 10, 60)):  # Redis emptied after the third
        history.add([status(t + 5 * i, delivered)])
    history.add([status(t + 20, 60)])  # the reader's same reading again: no sample
    assert len(history.samples) == 5
    assert history.rates("d") == [(t + 5, 10.0), (t + 10, 10.0), (t + 15, 0.0), (t + 20, 10.0)]
    assert history.rates("unknown") == []
    # Over the last minute: from the oldest sample in it to the reading now.
    assert history.rate("d", status(t + 30, 100)) == 100 / 30
    assert history.rate("d", status(t + 0.5, 100)) is None  # too short to say
    assert History().rate("d", status(t, 0)) is None  # nothing to compare with yet


def test_the_ring_buffer_keeps_the_span() -> None:
    history = History(every=5, span=60)
    for i in range(100):
        history.add([status(float(i))])
    assert len(history.samples) == 13
    assert history.samples[0].at == 87.0


def test_a_chart_breaks_its_line_where_samples_are_missing() -> None:
    now = 10_000.0
    points = [(now - 100, 1.0), (now - 95, 2.0), (now - 90, 3.0), (now - 20, 4.0)]
    c = chart("t", [("a", points), ("b", [])], now, span=900, gap=12.5)
    a, b = c.lines
    assert len(a.segments) == 2  # 70 s without a sample: two stretches
    assert len(a.segments[0].split()) == 3
    assert len(a.segments[1].split()) == 2  # a lone point is drawn a pixel long
    assert a.last == 4.0 and b.segments == [] and b.last is None
    assert c.y_max == 5 and [label for _, label in c.y_ticks] == ["0", "2.5", "5"]
    assert [label for _, label in c.x_ticks] == ["-15 min", "-10 min", "-5 min", "now"]
    assert not c.empty and chart("t", [("a", [])], now).empty

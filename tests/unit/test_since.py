"""What `since` takes (router messages --since, the admin API's and the
dashboard's searches): an ISO 8601 time, ms since the epoch, or a duration
back from now; anything else is no time (the callers' 400 / exit 2)."""

from __future__ import annotations

import pytest

from router.config.durations import since_ms

NOW = 1_796_608_000.0  # 2026-12-07T01:46:40Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1796000000000", 1_796_000_000_000),
        ("0", 0),
        ("15m", 1_796_608_000_000 - 15 * 60_000),
        ("2h", 1_796_608_000_000 - 2 * 3_600_000),
        ("1.5s", 1_796_608_000_000 - 1500),
        ("7d", 1_796_608_000_000 - 7 * 86_400_000),
        ("2026-12-07T01:46:40", 1_796_608_000_000),  # no offset: UTC
        ("2026-12-07T01:46:40Z", 1_796_608_000_000),
        ("2026-12-07T02:46:40+01:00", 1_796_608_000_000),
        ("2026-12-07", 1_796_601_600_000),
    ],
)
def test_a_time_is_read(text: str, ms: int) -> None:
    assert since_ms(text, NOW) == ms


@pytest.mark.parametrize(
    "text", ["", "yesterday", "-5m", "15x", "1e9", "2026-13-01", "15 parsecs", "9" * 5000]
)
def test_anything_else_is_no_time(text: str) -> None:
    assert since_ms(text, NOW) is None

"""How a destination's outbound rate limit is split over its shards
(router.queue.outbound_rate): the shards' rates add up to the limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.config import OutboundRateLimit
from router.config.loading import load
from router.queue.outbound_rate import shard_rate
from tests.support import ROOT


def test_no_limit_is_none() -> None:
    assert shard_rate(None, 0, 1) is None


def test_one_shard_spaces_requests_by_period_over_requests() -> None:
    rate = shard_rate(OutboundRateLimit(requests=80), 0, 1)
    assert rate is not None and (rate.interval_us, rate.burst) == (12_500, 2)
    # Rounded up: never faster than the limit.
    third = shard_rate(OutboundRateLimit(requests=3, burst=1), 0, 1)
    assert third is not None and third.interval_us == 333_334


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_the_shards_add_up_to_the_limit(shards: int) -> None:
    limit = OutboundRateLimit(requests=80, burst=5)
    rates = [shard_rate(limit, i, shards) for i in range(shards)]
    per_second = sum(1_000_000 / r.interval_us for r in rates if r)
    assert 80 * 0.999 <= per_second <= 80
    assert all(r is not None and r.burst >= 1 for r in rates)


def test_the_whatsapp_example_of_the_docs_loads(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "rate-limits.md").read_text()
    example = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)[0]
    (tmp_path / "routes.yaml").write_text(example)
    env = {"WA_PHONE_NUMBER_ID": "123", "WA_TOKEN": "t"}
    dest = load(str(tmp_path / "routes.yaml"), env=env).destinations["whatsapp_send"]
    assert dest.settings.rate_limit == OutboundRateLimit(requests=80)

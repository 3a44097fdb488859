"""A destination's outbound rate limit (`rate_limit:` under a destination):
how many requests may start per period, across all processes.

Not router.ingest.ratelimit, which refuses senders at ingest (a route's
`rate_limit`). This one never refuses anything: a message over the limit
waits in `ready`, untouched (no lease, no attempt counted), until the limit
allows its start.

The limit is GCRA, kept in Redis per destination shard (one key, the
theoretical arrival time: _lib.lua's throttle_allows / throttle_take) on the
Redis clock, and applied where a request starts: claim.lua claims no more
keys than it allows, and ack.lua keeps a key for its next message only when
it allows one more start. Requests are spaced period / requests apart;
`burst` may go at once after a quiet time.

A destination with `shards: N` splits the limit as it splits max_in_flight
(router.queue.keys.shard_share): shard i gets its share of `requests` per period
and of `burst` (at least 1), so the shards add up to the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.config import OutboundRateLimit
from router.queue.keys import shard_share


@dataclass(frozen=True, slots=True)
class ShardRate:
    """One shard's part of the limit, as the scripts take it."""

    interval_us: int  # between two starts (rounded up: never faster than the limit)
    burst: int

    def script_args(self) -> list[int]:
        """claim.lua's and ack.lua's last two ARGV."""
        return [self.interval_us, self.burst]


# What the scripts get for a destination without a limit.
NO_LIMIT_ARGS = [0, 1]


def shard_rate(limit: OutboundRateLimit | None, shard: int, shards: int) -> ShardRate | None:
    """Shard `shard`'s part of `limit` (None: no limit). Config checks that
    `requests` >= `shards`, so every shard gets at least one per period."""
    if limit is None:
        return None
    requests = max(1, shard_share(limit.requests, shard, shards))
    burst = max(1, shard_share(limit.burst, shard, shards))
    return ShardRate(math.ceil(limit.period * 1_000_000 / requests), burst)

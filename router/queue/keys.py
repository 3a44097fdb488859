"""Every Redis key the router uses, in one place.

All keys of one destination shard share one hash tag (``{rt:<destination>}``
when the destination has one shard, the default) so the Lua scripts that
move a message between them touch a single Redis Cluster slot. A destination
with `shards: N` has N such tags (see shard_tag), and an ordering key always
lives in the same one (shard_of). The layout is documented in the README
("Redis layout").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "rt"


def shard_of(ordering_key: str, shards: int) -> int:
    """The shard an ordering key lives in: stable across processes, versions
    and restarts (CRC32 of its UTF-8 bytes), so a conversation never moves."""
    if shards == 1:
        return 0
    return zlib.crc32(ordering_key.encode()) % shards


@cache
def shard_tag(destination: str, shard: int, shards: int) -> str:
    """The hash tag of one shard of a destination.

    One shard keeps the tag it always had. With N shards, shard i's tag is
    the first of `rt:D:i`, `rt:D:i:1`, `rt:D:i:2`, ... whose Cluster slot falls
    in the i-th N-th of the slot space: slots are spread over the masters in
    ranges (as `--cluster create` does), so N shards, N a multiple of the
    masters, put the same number of shards on every master. A tag left to
    chance would put all 3 shards on one master 1 time in 9."""
    base = f"{PREFIX}:{destination}"
    if shards == 1:
        return "{" + base + "}"
    # One slot in from each end of the window: `--cluster create` rounds
    # its split points (0-5460, 5461-10922, 10923-16383 for 3 masters),
    # where i * 16384 / N floors, so an edge slot may belong to the next.
    low = shard * REDIS_CLUSTER_HASH_SLOTS // shards + 1
    high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards - 1
    candidate = f"{base}:{shard}"
    n = 0
    while not low <= key_slot(candidate.encode()) < high:
        n += 1
        candidate = f"{base}:{shard}:{n}"
    return "{" + candidate + "}"


def shard_share(total: int, shard: int, shards: int) -> int:
    """Shard `shard`'s part of a destination-wide limit (max_in_flight): the
    parts differ by at most one and add up to `total` exactly."""
    return total // shards + (1 if shard < total % shards else 0)


@dataclass(frozen=True, slots=True)
class DestinationKeys:
    """Names of the Redis keys that hold one shard of a destination's queue
    (the whole queue when it has one shard)."""

    destination: str
    shard: int = 0
    shards: int = 1

    @property
    def tag(self) -> str:
        return shard_tag(self.destination, self.shard, self.shards)

    @property
    def lane_prefix(self) -> str:
        """Prefix of the per-ordering-key lists; the key value follows it."""
        return f"{self.tag}:lane:"

    def lane(self, key: str) -> str:
        return self.lane_prefix + key

    @property
    def ready(self) -> str:
        """List of ordering keys whose head message can be attempted now."""
        return f"{self.tag}:ready"

    @property
    def leases(self) -> str:
        """Sorted set: claimed ordering key -> lease deadline (ms, server clock)."""
        return f"{self.tag}:leases"

    @property
    def owner(self) -> str:
        """Hash: claimed ordering key -> fencing token of the claim."""
        return f"{self.tag}:owner"

    @property
    def delayed(self) -> str:
        """Sorted set: ordering key waiting out a backoff -> due time (ms)."""
        return f"{self.tag}:delayed"

    @property
    def attempts(self) -> str:
        """Hash: ordering key -> failed attempts of its head message so far."""
        return f"{self.tag}:attempts"

    @property
    def last_error(self) -> str:
        """Hash: ordering key -> last error of its head message."""
        return f"{self.tag}:lasterr"

    @property
    def dead(self) -> str:
        """List of dead-lettered messages (JSON: key, envelope, error, attempts,
        dead_at, and seq: its sequence number, absent when it had none)."""
        return f"{self.tag}:dead"

    @property
    def blocked(self) -> str:
        """Hash: ordering key stopped by on_exhausted: block -> JSON (error, attempts)."""
        return f"{self.tag}:blocked"

    @property
    def wake(self) -> str:
        """List of at most one element: a nudge for workers blocked in BLPOP."""
        return f"{self.tag}:wake"

    @property
    def paused(self) -> str:
        """String, present while the destination is paused (value: when, ms)."""
        return f"{self.tag}:paused"

    @property
    def paused_keys(self) -> str:
        """Hash: ordering key paused by an operator (`router pause DEST KEY`)
        -> JSON {"since": ms, "parked": true when its turn came while paused}.
        A parked key is in none of ready/leases/delayed/blocked (claim.lua
        took it out of ready instead of claiming it); resume_key.lua puts it
        back in ready. Kept while the conversation has no messages too: what
        arrives for it waits."""
        return f"{self.tag}:paused_keys"

    @property
    def counts(self) -> str:
        """Hash: `messages` stored and not yet acknowledged (dead letters
        not included), `acked` acknowledged so far; kept by the scripts so
        status and metrics read them in O(1)."""
        return f"{self.tag}:counts"

    @property
    def heads(self) -> str:
        """Sorted set: ordering key -> arrival time (ms) of its lane's head
        message; the first member is the oldest message waiting."""
        return f"{self.tag}:heads"

    @property
    def health(self) -> str:
        """Hash, present only while the destination is down or held: the
        circuit breaker's `state` ('down'), `since`, `onset` (the first
        counted failure of the outage), `probe_at`, `probe_ms`,
        `probe_key`, `error`, and `hold_until` (ms) of a Retry-After
        (docs/destination-health.md)."""
        return f"{self.tag}:health"

    @property
    def failing(self) -> str:
        """Sorted set: ordering key -> time (ms) of its last failed attempt
        since the destination's last success; failures on enough keys open
        the circuit breaker."""
        return f"{self.tag}:failing"

    @property
    def suspects(self) -> str:
        """Sorted set: ordering key -> time (ms) of its first failed attempt
        since its own last success; such a conversation counts once toward
        opening the circuit breaker, however often it fails."""
        return f"{self.tag}:suspects"

    @property
    def breaker(self) -> str:
        """Hash: what the circuit breaker remembers while the destination is
        up: `recovered`, when (ms, server clock) it last came back up (a
        message that arrived before it waited through that outage, and its
        failure does not count again); `streak`, when the current run of
        counted failures with no success between them began."""
        return f"{self.tag}:breaker"

    @property
    def throttle(self) -> str:
        """String with TTL: the outbound rate limit's theoretical arrival
        time (GCRA, µs on the Redis clock; router.queue.outbound_rate); absent
        while the shard has made no recent requests."""
        return f"{self.tag}:throttle"

    @property
    def moved(self) -> str:
        """Hash: `<move token>:<message id>` -> 1 for each message a move from
        another destination copied here and has not yet removed from its
        source (router.queue.moving): a move run again after a crash skips them."""
        return f"{self.tag}:moved"

    @property
    def seq(self) -> str:
        """Hash: ordering key -> the last sequence number given to a message
        of that key here (1, 2, 3... in arrival order: `X-Router-Sequence`).
        Incremented by the script that appends a message to its lane
        (store_message, move_in.lua), so numbers follow lane order. Kept as
        long as the destination: a purge of an orphan's queue deletes it."""
        return f"{self.tag}:seq"

    @property
    def log(self) -> str:
        """Hash, the message log (router.queue.message_log): `<id>` -> the
        message's record here (JSON: key, received_at, seq, state, n
        entries, failed entries), `<id>:<i>` -> the i-th entry of its story
        (JSON: attempt, started_at, duration_ms, outcome, status, error,
        response). Absent while the log is off (ROUTER_MESSAGE_LOG=0)."""
        return f"{self.tag}:log"

    @property
    def logged(self) -> str:
        """Sorted set: message id -> arrival time (ms) of every message in
        `log`: what retention trims, oldest first, and search reads, newest
        first."""
        return f"{self.tag}:logged"

    def seen(self, message_id: str) -> str:
        """Dedup marker of a message id (string with TTL; value = stored message id)."""
        return f"{self.tag}:seen:{message_id}"


def all_shards(destination: str, shards: int) -> list[DestinationKeys]:
    return [DestinationKeys(destination, i, shards) for i in range(shards)]


def shard_count_key(destination: str) -> str:
    """String: the number of shards the destination's messages are stored
    under (absent: 1). Lives under the one-shard tag."""
    return f"{shard_tag(destination, 0, 1)}:shards"


def move_key(destination: str) -> str:
    """Hash: `dead` (its dead letters) / `queue` (its queued messages) ->
    `<target> <token>` of a move of them into `target` that has not
    finished (router.queue.moving); a move run again after a crash takes the same
    token. Lives under the one-shard tag."""
    return f"{shard_tag(destination, 0, 1)}:moving"


def destinations_key() -> str:
    """Set: the name of every destination any process was ever configured
    with (router.queue.orphans): how a destination removed from routes.yaml while
    it still holds messages is found and shown as orphaned."""
    return f"{PREFIX}:destinations"


def rate_limit_key(route_path: str, sender: str) -> str:
    """Counter of one sender's requests to a route in the current window."""
    return f"{PREFIX}:ratelimit:{route_path}:{sender}"


@dataclass(frozen=True, slots=True)
class RouteKeys:
    """Names of the Redis keys of one ingest route: the items of its requests
    that were answered 200 but could not be routed (router.queue.unroutable).
    `route` is the route's path as Litestar routes it (config.route_key)."""

    route: str

    @property
    def tag(self) -> str:
        return "{" + f"{PREFIX}:route:{self.route}" + "}"

    @property
    def unroutable(self) -> str:
        """List of kept items, oldest first (JSON: route, reason, problem,
        item, body, at); at most router.queue.unroutable.MAX_KEPT, oldest trimmed."""
        return f"{self.tag}:unroutable"

    @property
    def trimmed(self) -> str:
        """Counter: kept items dropped from `unroutable` to keep it within its cap."""
        return f"{self.tag}:unroutable:trimmed"

    def seen(self, digest: str) -> str:
        """Marker of an item kept (string with the route's dedup_ttl): Meta's
        redelivery of the same request keeps it once."""
        return f"{self.tag}:unroutable:seen:{digest}"


def unroutable_routes_key() -> str:
    """Set: the path of every route that ever kept an unroutable item: what
    `router status` and the dashboard list (a route since removed included)."""
    return f"{PREFIX}:unroutable-routes"


def operator_log_key() -> str:
    """Stream: every operator action (retry, pause, replay, ...) from the
    CLI, the admin API or the dashboard, capped at about 10,000 entries;
    the server processes log each once, through one consumer group
    (router.queue.operator_log)."""
    return f"{PREFIX}:operator"

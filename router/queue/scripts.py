"""The Lua scripts in router/queue/lua/: loading, and the KEYS each one takes.

Every script starts with the shared prelude `_lib.lua` (the server clock, the
wake nudge, the fencing check and the LEASE_LOST return code, each written
once). Each script names its keys at the top (`local ready, leases = KEYS[1],
KEYS[2]`); SCRIPT_KEYS below is the Python side of the same list, and
tests/unit/test_scripts.py checks that the two agree by name and position.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from router.queue import batching
from router.queue.keys import DestinationKeys
from router.redis.client import is_cluster

# What a script returns when the caller no longer holds the lease of the key
# it works on (_lib.lua's LEASE_LOST).
LEASE_LOST = -1

# Script -> its KEYS in order, as DestinationKeys names ("lane" is the lane of
# the call's ordering key). enqueue takes its group once per destination.
SCRIPT_KEYS: dict[str, tuple[str, ...]] = {
    "enqueue": ("lane", "ready", "wake", "seen", "counts", "heads", "seq", "log", "logged"),
    # Several messages of one request (an ingest format), each its own targets.
    "enqueue_many": ("lane", "ready", "wake", "seen", "counts", "heads", "seq", "log", "logged"),
    "claim": (
        "ready",
        "leases",
        "owner",
        "delayed",
        "attempts",
        "wake",
        "blocked",
        "paused",
        "health",
        "throttle",  # the outbound rate limit (router.queue.outbound_rate)
        "suspects",
        "log",
        "logged",
        "paused_keys",  # conversations paused by an operator: parked, not claimed
    ),
    "ack": (
        "lane",
        "ready",
        "leases",
        "owner",
        "attempts",
        "last_error",
        "wake",
        "delayed",
        "paused",
        "counts",
        "heads",
        "health",
        "failing",
        "throttle",  # the outbound rate limit (router.queue.outbound_rate)
        "suspects",
        "breaker",
        "log",
        "logged",
        "paused_keys",  # a paused conversation is never kept
    ),
    "fail": (
        "lane",
        "ready",
        "leases",
        "owner",
        "delayed",
        "attempts",
        "last_error",
        "wake",
        "dead",
        "blocked",
        "counts",
        "heads",
        "health",
        "failing",
        "suspects",
        "breaker",
        "log",
        "logged",
    ),
    # Coalescing (a destination's `coalesce`): a claimed key's group, or its wait.
    "gather": ("lane", "leases", "owner", "delayed", "attempts", "wake", "health"),
    "renew": ("leases", "owner"),
    "release": ("ready", "leases", "owner", "wake", "health"),
    "replay": (
        "dead",
        "lane",
        "ready",
        "wake",
        "leases",
        "attempts",
        "last_error",
        "counts",
        "heads",
        "log",
    ),
    "unblock": ("blocked", "ready", "attempts", "wake"),
    "resume": ("paused", "wake"),
    # One conversation (an ordering key) paused, resumed, or its head skipped.
    "pause_key": ("paused_keys",),
    "resume_key": ("paused_keys", "lane", "ready", "wake"),
    "skip": (
        "lane",
        "ready",
        "leases",
        "owner",
        "delayed",
        "attempts",
        "last_error",
        "wake",
        "dead",
        "blocked",
        "counts",
        "heads",
        "paused_keys",
        "suspects",
        "health",
        "log",
        "logged",
    ),
    "recount": ("counts", "heads", "ready", "leases", "delayed", "blocked", "paused_keys"),
    "retry": ("delayed", "ready", "wake"),
    "purge": ("dead",),
    # A move between destinations (router.queue.moving): into the target, then out
    # of the source (each one slot); move_out alone purges an orphan's queue.
    "move_in": ("lane", "ready", "wake", "counts", "heads", "moved", "seq"),
    "move_out": (
        "dead",
        "lane",
        "ready",
        "leases",
        "owner",
        "delayed",
        "attempts",
        "last_error",
        "blocked",
        "counts",
        "heads",
        "log",
        "logged",
        "paused_keys",
    ),
    "reopen": (
        "health",
        "failing",
        "ready",
        "delayed",
        "heads",
        "wake",
        "suspects",
        "breaker",
    ),
    "ratelimit": ("counter",),  # not a destination's: see router.queue.keys.rate_limit_key
    # A route's, not a destination's: router.queue.keys.RouteKeys (router.queue.unroutable).
    "keep_unroutable": ("unroutable", "trimmed"),
}
PER_DESTINATION = {"enqueue", "enqueue_many"}


@cache
def source(name: str) -> str:
    """The script as sent to Redis: the prelude's definitions it uses, then
    the script itself."""
    script = resources.files("router.queue").joinpath("lua", f"{name}.lua").read_text()
    return prelude_for(script) + script


# A top-level definition of _lib.lua: `local function name(` or `local NAME =`.
_DEFINITION = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)


def prelude_for(script: str) -> str:
    """The definitions of _lib.lua that `script` uses, directly or through
    another definition, in _lib.lua's order. Redis runs the prelude on every
    call, making each function it defines anew: all of them took 2.3 µs of
    Redis time per call, an ack's share 1.2 µs (each ack is one message)."""
    text = resources.files("router.queue").joinpath("lua", "_lib.lua").read_text()
    found = list(_DEFINITION.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    parts = {m.group(1): text[m.start() : end] for m, end in zip(found, ends, strict=True)}
    used: set[str] = set()
    pending = [script]
    while pending:
        words = set(re.findall(r"\w+", pending.pop()))
        for name in words & parts.keys() - used:
            used.add(name)
            pending.append(parts[name])
    header = text[: found[0].start()]
    return header + "".join(part for name, part in parts.items() if name in used)


def load(redis: Redis, name: str) -> AsyncScript:
    """Register a script with a client (EVALSHA after the first call;
    redis-py reloads it by itself after a server restart)."""
    return redis.register_script(source(name))


# KEYS that depend on the call, not only on the destination shard: the
# lane of the call's ordering key, and enqueue's dedup marker (`given`).
_PER_CALL = ("lane", "seen")


@cache
def _shard_keys(name: str, keys: DestinationKeys) -> tuple[list[str], tuple[tuple[int, str], ...]]:
    """Script `name`'s KEYS for one destination shard, with "" where a key
    depends on the call, and those places: worked out once per shard (each
    name is an f-string; an ack names 19 keys: 3 % of a worker's CPU)."""
    parts = SCRIPT_KEYS[name]
    fixed = ["" if part in _PER_CALL else getattr(keys, part) for part in parts]
    return fixed, tuple((i, part) for i, part in enumerate(parts) if part in _PER_CALL)


def keys_for(name: str, keys: DestinationKeys, ordering_key: str = "", **given: str) -> list[str]:
    """The KEYS of script `name` for one destination and ordering key;
    `given` names keys that depend on the call (enqueue's `seen`)."""
    fixed, per_call = _shard_keys(name, keys)
    out = fixed.copy()
    for i, part in per_call:
        out[i] = keys.lane(ordering_key) if part == "lane" and part not in given else given[part]
    return out


class Scripts:
    """The destination scripts, registered once per Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.cluster = is_cluster(redis)  # one slot per script: see queue.enqueue
        self.redis = redis  # for the plain commands next to a script (router.queue.unroutable)
        self.enqueue = load(redis, "enqueue")
        self.enqueue_many = load(redis, "enqueue_many")
        self.claim = load(redis, "claim")
        self.ack = load(redis, "ack")
        self.fail = load(redis, "fail")
        self.gather = load(redis, "gather")
        self.renew = load(redis, "renew")
        self.release = load(redis, "release")
        self.replay = load(redis, "replay")
        self.unblock = load(redis, "unblock")
        self.resume = load(redis, "resume")
        self.pause_key = load(redis, "pause_key")
        self.resume_key = load(redis, "resume_key")
        self.skip = load(redis, "skip")
        self.recount = load(redis, "recount")
        self.retry = load(redis, "retry")
        self.purge = load(redis, "purge")
        self.move_in = load(redis, "move_in")
        self.move_out = load(redis, "move_out")
        self.reopen = load(redis, "reopen")
        self.keep_unroutable = load(redis, "keep_unroutable")
        # The delivery loops' claims and acks, coalesced (router.queue.batching)
        # over every shard and destination on this client, not per shard: with
        # a batcher per shard, a destination at `shards: 6` wrote to Redis 5x
        # as often as at `shards: 1` (batches of 2 calls instead of 9) and
        # spent a third more CPU per message. Only the round trips are shared:
        # each call still gets its own reply, and its script its own keys.
        self.claims = batching.batcher(redis, self.claim)
        self.acks = batching.batcher(redis, self.ack)

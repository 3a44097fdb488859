"""Every Redis key the router uses, in one place.

All keys of one destination share the hash tag ``{rt:<destination>}`` so the
Lua scripts that move a message between them touch a single Redis Cluster
slot. The layout is documented in the README ("Redis layout").
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "rt"


@dataclass(frozen=True, slots=True)
class DestinationKeys:
    """Names of the Redis keys that hold one destination's queue."""

    destination: str

    @property
    def tag(self) -> str:
        return "{" + f"{PREFIX}:{self.destination}" + "}"

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
        """List of dead-lettered messages (JSON: key, envelope, error, attempts, dead_at)."""
        return f"{self.tag}:dead"

    @property
    def blocked(self) -> str:
        """Hash: ordering key stopped by on_exhausted: block -> JSON (error, attempts)."""
        return f"{self.tag}:blocked"

    @property
    def wake(self) -> str:
        """List of at most one element: a nudge for workers blocked in BLPOP."""
        return f"{self.tag}:wake"

    def seen(self, message_id: str) -> str:
        """Dedup marker of a message id (string with TTL; value = stored message id)."""
        return f"{self.tag}:seen:{message_id}"


def rate_limit_key(route_path: str, sender: str) -> str:
    """Counter of one sender's requests to a route in the current window."""
    return f"{PREFIX}:ratelimit:{route_path}:{sender}"

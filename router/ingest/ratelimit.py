"""Per-sender rate limits, counted in Redis so every instance shares them.

A fixed window per (route, sender): INCR a counter that expires with the
window. A sender over the limit gets 429 with Retry-After (the window's
remaining time) and nothing is stored.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from router.config import RateLimitSettings
from router.http.errors import ApiError
from router.queue import scripts
from router.queue.keys import rate_limit_key


class RateLimiter:
    def __init__(self, redis: Redis, route_path: str, settings: RateLimitSettings) -> None:
        self.script: AsyncScript = scripts.load(redis, "ratelimit")
        self.route_path = route_path
        self.settings = settings
        self.period_ms = max(1, int(settings.period * 1000))

    async def check(self, sender: str) -> None:
        count, ttl = await self.script(
            keys=[rate_limit_key(self.route_path, sender)], args=[self.period_ms]
        )
        if int(count) > self.settings.requests:
            retry_after = max(1, -(-int(ttl) // 1000))  # whole seconds, rounded up
            raise ApiError(
                429,
                f"rate limit: at most {self.settings.requests} messages per "
                f"{self.settings.period:g}s per {self.settings.per}",
                {"Retry-After": str(retry_after)},
            )

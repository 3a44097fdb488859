"""What the HTTP handlers of one app share, filled in by its lifespan."""

from __future__ import annotations

from redis.asyncio import Redis

from router.batching import Batcher
from router.config import Config
from router.errors import ApiError
from router.queue import Scripts
from router.ratelimit import RateLimiter
from router.settings import Settings
from router.status import StatusReader
from router.worker import Workers


class RouterState:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.redis: Redis | None = None
        self.scripts: Scripts | None = None
        self.batcher: Batcher | None = None  # ingest's enqueue calls, coalesced
        self.workers: Workers | None = None  # when this process delivers too
        self.limiters: dict[str, RateLimiter] = {}  # route path -> its rate limit
        self.status: StatusReader | None = None  # the queues' figures, read at most once a second

    def require_redis(self) -> tuple[Redis, Scripts]:
        if self.redis is None or self.scripts is None:
            raise ApiError(503, "starting up", {"Retry-After": "1"})
        return self.redis, self.scripts

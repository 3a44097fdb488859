"""What the HTTP handlers of one app share, filled in by its lifespan: the
process's Runtime (router.runtime.wiring) and ingest's own parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis

from router.config import Config, route_key
from router.config.settings import Settings
from router.http.errors import ApiError
from router.http.throttle import FailedAuthThrottle
from router.ingest.ratelimit import RateLimiter
from router.ingest.route import IngestRoute
from router.ingest.writable import WriteGate
from router.queue.batching import Batcher
from router.queue.keys import all_shards
from router.queue.scripts import Scripts

if TYPE_CHECKING:
    from router.queue.status import StatusReader
    from router.runtime.reload import Reloader
    from router.runtime.wiring import Runtime


class RouterState:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.runtime: Runtime | None = None  # set by the lifespan
        self.batcher: Batcher | None = None  # ingest's enqueue calls, coalesced
        self.batcher_many: Batcher | None = None  # ingest formats' enqueue_many calls
        # Unroutable items kept (router.queue.unroutable): under ROUTER_REDIS_WAIT
        # too, since their request is answered 200 as the messages' are.
        self.batcher_keep: Batcher | None = None
        self.limiters: dict[str, RateLimiter] = {}  # route path -> its rate limit
        # route_key(path) -> the route as the running routes.yaml defines it;
        # each ingest handler looks its route up here on every request, so a
        # reload (router.runtime.reload) takes effect at once.
        self.ingest: dict[str, IngestRoute] = {}
        # Wrong admin and metrics tokens by client (router.http.throttle):
        # one table for the admin API, the dashboard and /metrics.
        self.wrong_tokens = FailedAuthThrottle()
        # Whether ROUTER_REDIS_WAIT's replicas are in sync on every master
        # holding a destination shard (router.ingest.writable): /readyz's gate.
        self.writes = WriteGate(settings, self.shard_tags)
        self.use_config(config)

    # The Runtime's parts, None before the lifespan connected.
    @property
    def redis(self) -> Redis | None:
        return None if self.runtime is None else self.runtime.redis

    @property
    def scripts(self) -> Scripts | None:
        return None if self.runtime is None else self.runtime.scripts

    @property
    def status(self) -> StatusReader | None:
        """The queues' figures, read at most once a second."""
        return None if self.runtime is None else self.runtime.status

    @property
    def delivering(self) -> bool:
        """Whether this process's delivery workers run now."""
        return self.runtime is not None and self.runtime.delivering

    @property
    def reloader(self) -> Reloader | None:
        """The routes.yaml watch (router.runtime.reload)."""
        return None if self.runtime is None else self.runtime.reloader

    def use_config(self, config: Config) -> None:
        """Serve `config`'s routes from now on (at start and at a reload)."""
        self.config = config
        self.ingest = {route_key(r.path): IngestRoute.of(r) for r in config.routes}
        self.build_limiters()

    def shard_tags(self) -> list[str]:
        """The hash tag of every shard of every configured destination:
        what ingest writes to."""
        return [
            keys.tag
            for d in self.config.destinations.values()
            for keys in all_shards(d.name, d.settings.shards)
        ]

    def build_limiters(self) -> None:
        """The routes' rate limiters (once Redis is connected)."""
        if self.redis is None:
            return
        redis = self.redis
        self.limiters = {
            r.path: RateLimiter(redis, r.path, r.settings.rate_limit)
            for r in self.config.routes
            if r.settings.rate_limit is not None
        }

    def require_redis(self) -> tuple[Redis, Scripts]:
        if self.redis is None or self.scripts is None:
            raise ApiError(503, "starting up", {"Retry-After": "1"})
        return self.redis, self.scripts

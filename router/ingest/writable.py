"""When ingest can take writes under ROUTER_REDIS_WAIT, and the log line
that says so.

With ROUTER_REDIS_WAIT=N every ingest write ends with `WAIT N`: a master
whose replicas are not in sync yet (router.redis.mode.too_few_replicas)
holds each write to its slots for the whole ingest deadline, then answers
503. So `/readyz` answers 503 until every master holding a shard of a
configured destination has N replicas in sync, and the process logs the
moment it first sees that ("writable"). At start this is a gate: a
balancer sends nothing before the first write can succeed (a freshly formed
Cluster's replicas wait seconds for their first sync).

Once writable, one Redis that loses its replicas makes /readyz 503 again
(every write would wait out the deadline), but on a Cluster a master left
without replicas (a failover, until the failed node rejoins) is only a
warning: the other masters' slots still take writes, which a balancer
dropping the process would stop too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config.settings import Settings
from router.redis import mode as redis_mode

log = logging.getLogger("router")

# How often a process not writable yet looks again, to log the moment it is.
LOOK_EVERY = 0.5


class WriteGate:
    """Whether the ROUTER_REDIS_WAIT replicas of every master ingest writes
    to are in sync; `keys` gives a key of each destination shard."""

    def __init__(self, settings: Settings, keys: Callable[[], Iterable[str]]) -> None:
        self.wanted = settings.redis_wait
        self.deadline = settings.ingest_deadline
        self.keys = keys
        self.writable = self.wanted == 0  # seen writable at least once

    async def problem(self, redis: Redis) -> str | None:
        """Why a write's WAIT cannot succeed now, or None (noted, and
        logged the first time)."""
        if self.wanted == 0:
            return None
        problem = await redis_mode.too_few_replicas(
            redis, self.wanted, self.keys(), ack_within=self.deadline
        )
        if problem is None and not self.writable:
            self.writable = True
            log.info(
                "Redis writable: every master this process writes to has %d replica(s) in "
                "sync (ROUTER_REDIS_WAIT=%d)",
                self.wanted,
                self.wanted,
            )
        return problem

    async def watch(self, redis: Redis) -> None:
        """Look until writable: the first reason why not is a warning, the
        moment it is writable an info line (problem())."""
        warned = False
        while not self.writable:
            try:
                async with asyncio.timeout(self.deadline):
                    problem = await self.problem(redis)
            except (RedisError, OSError, TimeoutError) as exc:
                problem = f"Redis does not answer ({exc or 'timeout'})"
            if problem is not None:
                # Once: the reason's figures change every second meanwhile.
                (log.debug if warned else log.warning)("not writable yet: %s", problem)
                warned = True
                await asyncio.sleep(LOOK_EVERY)

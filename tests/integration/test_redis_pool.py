"""router.redis.client's pool: past its size a command waits for a free
connection; a wait that ends (the caller's deadline, or the pool's own
timeout) is named as a busy pool, not as an unreachable Redis."""

from __future__ import annotations

import asyncio

import pytest

from router.http.errors import redis_cause
from router.redis import client as redis_client


async def test_a_command_past_the_pool_size_waits_for_a_free_connection(clean_redis: str) -> None:
    client = redis_client.connect(clean_redis, max_connections=2)
    try:
        # 50 commands on 2 connections, each holding one for a moment.
        results = await asyncio.gather(*(client.blpop(["nothing"], 0.05) for _ in range(50)))
        assert results == [None] * 50
        assert len(client.connection_pool._available_connections) <= 2
    finally:
        await client.aclose()


async def test_a_deadline_that_ends_the_wait_names_the_busy_pool(clean_redis: str) -> None:
    client = redis_client.connect(clean_redis, max_connections=1)
    try:
        holder = asyncio.create_task(client.blpop(["nothing"], 2))  # holds the one connection
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(0.2):
                await client.ping()
        cause = redis_cause(caught.value, 0.2)
        assert "no free Redis connection within 0.2s: all 1 in use" in cause
        assert "ROUTER_REDIS_CONNECTIONS" in cause
        await holder
        assert await client.ping()  # the pool recovers once the connection is free
    finally:
        await client.aclose()


async def test_the_pools_own_timeout_raises_pool_exhausted(clean_redis: str) -> None:
    client = redis_client.connect(clean_redis, max_connections=1)
    client.connection_pool.timeout = 0.2  # POOL_TIMEOUT, shortened for the test
    try:
        holder = asyncio.create_task(client.blpop(["nothing"], 1))
        await asyncio.sleep(0.1)
        with pytest.raises(redis_client.PoolExhausted) as caught:
            await client.ping()
        assert "all 1 in use" in redis_cause(caught.value)
        await holder
    finally:
        await client.aclose()


async def test_a_slow_redis_is_still_named_as_such(clean_redis: str) -> None:
    """A deadline that ends a command on the wire (not a wait for the pool)
    blames Redis, as before."""
    client = redis_client.connect(clean_redis, max_connections=4)
    try:
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(0.1):
                await client.blpop(["nothing"], 1)
        assert redis_cause(caught.value, 0.1) == "Redis did not answer within 0.1s"
    finally:
        await client.aclose()


async def test_a_waiter_cancelled_as_its_turn_comes_hands_the_turn_on(clean_redis: str) -> None:
    """A burst's deadlines cancel waiters at any moment, also the one just
    given the free connection: the next waiter must get it, not wait out
    its own deadline beside an idle connection (asyncio.Condition on 3.11
    loses that wake-up; redis-py's BlockingConnectionPool waits on one)."""
    client = redis_client.connect(clean_redis, max_connections=1)
    pool = client.connection_pool
    try:
        held = await pool.get_connection()
        first = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0.05)
        await pool.release(held)  # the turn goes to `first` ...
        first.cancel()  # ... whose deadline passes in the same loop iteration
        connection = await asyncio.wait_for(second, 1)  # at once, not after POOL_TIMEOUT
        await pool.release(connection)
        assert first.cancelled()
        assert await client.ping()
    finally:
        await client.aclose()

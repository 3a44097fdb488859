"""Group commit: the calls of one Lua script made by concurrent tasks go to
Redis in one pipeline, one round trip, instead of one each. Ingest's
enqueue uses it (the writes of concurrent requests) and so do the
workers' acks (the deliveries that finish together).

A caller hands its script call to the batcher and waits for its own reply:
an ingest request is answered only after Redis ran *its* script, exactly as
without batching. While one pipeline is on the wire, the calls that arrive
queue up and go together in the next; under light load a batch is one call
and costs what a lone EVALSHA costs, under heavy load the round trips (and
the system calls on both ends) are shared by everything that arrived
meanwhile. Measured in docs/benchmarks.md.

What a caller learns when something fails is as precise as without
batching (router.ingest's "stored": "no" | "unknown"):
- A caller whose deadline passes while its call is still queued has it
  dropped from the queue, never sent: certainly not run ("no").
- A caller whose deadline passes once its batch is taken may have had it
  run ("unknown"), as for a lone command whose reply was lost.
- A failure of the whole pipeline reaches every caller of the batch, with
  whether its bytes had been written (router.redis_client.command_written).
- An error of one script (OOM, ...) reaches only its caller.
- NOSCRIPT (a Redis restarted or flushed of scripts since): the script did
  not run; it is loaded and the calls it refused are sent again, first.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from router.redis_client import command_written

# Most script calls in one pipeline: bounds the pipeline's memory and the
# time one batch holds a connection.
MAX_BATCH = 256


@dataclass(slots=True, eq=False)
class _Write:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    taken: bool = False  # part of a batch on its way: its bytes may reach Redis
    written: bool = False  # its batch failed after its bytes went to the socket


class ScriptBatcher:
    """Runs one Lua script (by its SHA) for many callers, coalesced."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._source = script.script
        self._sha = script.sha
        self._queue: collections.deque[_Write] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._loaded = False  # SCRIPT LOAD done on this server

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for these KEYS and ARGV (or its error)."""
        write = _Write(keys, args)
        self._queue.append(write)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name="script-batch")
        try:
            return await write.future
        except asyncio.CancelledError:
            # The caller's deadline: a queued write is skipped (its future is
            # cancelled now); one already taken may still be stored.
            command_written.set(write.taken)
            raise
        except Exception:
            command_written.set(write.written)
            raise

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch: list[_Write] = []
                while self._queue and len(batch) < MAX_BATCH:
                    write = self._queue.popleft()
                    if not write.future.done():  # not given up by its caller
                        write.taken = True
                        batch.append(write)
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None
        if self._queue:  # arrived while the last batch was settled
            self._sender = asyncio.create_task(self._send_all(), name="script-batch")

    async def _send(self, batch: list[_Write]) -> None:
        command_written.set(False)  # this task's own: set by the connection
        if not self._loaded:
            # Before the first batch, so that it does not come back refused
            # whole (NOSCRIPT) and go again. SCRIPT LOAD changes no data.
            try:
                await self._redis.script_load(self._source)
            except BaseException as exc:
                self._fail(batch, exc, written=False)
                raise_if_cancelled(exc)
                return
            self._loaded = True
            command_written.set(False)
        pipe = self._redis.pipeline(transaction=False)
        for w in batch:
            pipe.evalsha(self._sha, len(w.keys), *w.keys, *w.args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            self._fail(batch, exc, written=command_written.get())
            raise_if_cancelled(exc)
            return
        refused = []
        for w, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                refused.append(w)
            elif w.future.done():
                continue
            elif isinstance(reply, Exception):
                w.future.set_exception(reply)
            else:
                w.future.set_result(reply)
        if refused:
            # The script is gone from Redis (restarted, SCRIPT FLUSH): the
            # refused writes never ran; they go again, first, after a load.
            self._loaded = False
            self._queue.extendleft(reversed(refused))

    @staticmethod
    def _fail(batch: list[_Write], exc: BaseException, written: bool) -> None:
        for w in batch:
            if not w.future.done():
                w.written = written
                w.future.set_exception(exc)


def raise_if_cancelled(exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        raise exc

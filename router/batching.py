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
import contextlib
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from router.redis_client import command_written

# Most script calls in one pipeline: bounds the pipeline's memory and the
# time one batch holds a connection.
MAX_BATCH = 256


@dataclass(slots=True, eq=False)
class _Write:
    """A call waiting in the queue for the sender task."""

    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]
    taken: bool = False  # part of a batch on its way: its bytes may reach Redis
    written: bool = False  # its batch failed after its bytes went to the socket


class ScriptBatcher:
    """Runs one Lua script (by its SHA) for many callers, coalesced."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._source = script.script
        self._sha = script.sha
        self._queue: collections.deque[_Write] = collections.deque()
        # A batch is on its way (sent by a caller inline, or by the sender
        # task): calls queue up meanwhile. The queue is empty when not busy.
        self._busy = False
        self._sender: asyncio.Task[None] | None = None  # held: the loop keeps weak refs only
        self._loaded = False  # SCRIPT LOAD done on this server

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for these KEYS and ARGV (or its error)."""
        if not self._busy:
            # Nothing on its way: send this call now from the caller's own
            # task, as a plain EVALSHA (no future, no hop through the sender
            # task, no pipeline: the common case under light load, and a
            # busy key's acks). The connection notes in the caller's context
            # whether its bytes went out.
            self._busy = True
            try:
                return await self._send_one(keys, args)
            finally:
                self._busy = False
                self._start_sender()  # for calls that queued meanwhile
        write = _Write(keys, args, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        try:
            return await write.future
        except asyncio.CancelledError:
            # The caller's deadline: a queued call is skipped (its future is
            # cancelled now), unless its batch had taken it: then it may
            # have run.
            command_written.set(write.taken)
            if write.future.done() and not write.future.cancelled():
                write.future.exception()  # seen: the caller is cancelled, not failed
            raise
        except Exception:
            command_written.set(write.written)
            raise

    async def _send_one(self, keys: list[str], args: list[Any]) -> Any:
        command_written.set(False)
        if not self._loaded:
            await self._load()
        try:
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # it did not run: load the script, send again
            await self._load()
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)

    async def _load(self) -> None:
        """SCRIPT LOAD (changes no data: it does not count as written)."""
        await self._redis.script_load(self._source)
        self._loaded = True
        command_written.set(False)

    def _start_sender(self) -> None:
        if self._queue and not self._busy:
            self._busy = True
            self._sender = asyncio.create_task(self._send_all(), name="script-batch")

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
                    with contextlib.suppress(Exception):  # settled in the calls' futures
                        await self._send(batch)
        finally:
            self._busy = False
        self._start_sender()  # queued while the last batch was settled

    async def _send(self, batch: list[_Write]) -> None:
        command_written.set(False)  # this task's own: set by the connection
        try:
            if not self._loaded:
                # Before the first batch, so that it does not come back
                # refused whole (NOSCRIPT) and go again.
                await self._load()
            replies = await self._execute(batch)
        except BaseException as exc:
            self._fail(batch, exc, written=command_written.get())
            raise
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

    async def _execute(self, batch: list[_Write]) -> list[Any]:
        """Each call's reply, or the error Redis answered it with."""
        if len(batch) == 1:
            # A batch of one skips the pipeline object (a tenth less CPU
            # per call in a profile).
            w = batch[0]
            try:
                return [await self._redis.evalsha(self._sha, len(w.keys), *w.keys, *w.args)]
            except ResponseError as exc:  # Redis's answer to this call, NOSCRIPT included
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for w in batch:
            pipe.evalsha(self._sha, len(w.keys), *w.keys, *w.args)
        return list(await pipe.execute(raise_on_error=False))

    @staticmethod
    def _fail(batch: list[_Write], exc: BaseException, written: bool) -> None:
        """Settle the batch's calls with the failure that ended it. The
        sender task's cancellation (shutdown) is not handed on as such: the
        callers get an error saying so."""
        if isinstance(exc, asyncio.CancelledError):
            exc = RedisConnectionError("the pipeline was cancelled while on its way")
        for w in batch:
            if not w.future.done():
                w.written = written
                w.future.set_exception(exc)

"""Live routes.yaml: reloaded on SIGHUP and when the file changes.

Every router process (`serve`, `api`, `worker`, each of ROUTER_PROCESSES)
watches the routes file itself and applies a new one in place, so all of
them converge without a restart:

- **Watching.** Every ROUTER_ROUTES_POLL (1 s) the file is `stat`ed by path
  (inode, size, mtime), so an editor that saves by writing a new file and
  renaming it over the old one (vim, sed -i, Kubernetes' ConfigMap symlink
  swap) is seen like an in-place write. A changed file is applied only once
  it has held still for ROUTER_RELOAD_SETTLE (2 s): read several times over
  it, the same stat and content hash each time (a writer pausing mid-file
  leaves a valid prefix that must not be applied). Only a new content is
  loaded. A file modified within the last 2 s is hashed on every poll even
  with an unchanged stat, since two writes within one mtime tick can leave
  size and mtime alike. SIGHUP loads the file at once, changed or not,
  settled or not: the explicit path.
- **An invalid file** is refused with the one-line error `router check`
  prints, logged once per distinct content (a half-written file is not
  logged every second), and the running config is kept: the process goes
  on serving and delivering as before. So is any refusal below: nothing of
  the new file is applied unless all of it is.
- **A valid file** is applied whole. Ingest: each route handler looks its
  route up per request (router.web.state), so changed routes take effect at
  once; new paths are registered with Litestar at runtime; removed ones
  answer 404; rate limiters are rebuilt. Delivery: destinations whose
  definition is unchanged keep running untouched; changed and removed ones
  stop the way shutdown stops them (no new claims; deliveries in flight get
  ROUTER_SHUTDOWN_GRACE, the rest are handed back untried), then changed
  and new ones start with their new settings (router.delivery.workers,
  Workers.prepare/switch). The lanes in Redis keep each key's order across
  processes and switches, so nothing is dropped, duplicated or reordered.
- **`shards`** of a running destination cannot change by a reload (refused,
  naming the fix): ingest requests in flight and processes that have not
  reloaded yet would still write the old shards, stranding messages there.
  A destination new to this process gets the start-up check
  (router.queue.shard_layout).
- **Removed destinations** keep their queues, never deleted; while they
  hold anything they are orphaned (router.queue.orphans), named in a warning at
  start and at each reload.
- **Process settings** (the environment, router.config.settings) are not reloaded:
  they need a restart.

Under ROUTER_PROCESSES > 1 uvicorn's supervisor would answer SIGHUP by
replacing its server processes; hold_sighup() makes it forward the signal to
them instead, and each reloads in place (as it would within a second by its
own watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config import Config, ConfigError, read_routes_file, route_key
from router.config.loading import load
from router.config.plugins import PluginError
from router.config.settings import Settings
from router.ops.failures import one_line
from router.queue import orphans, shard_layout
from router.runtime import start_log

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler

    from router.delivery.workers import Workers

log = logging.getLogger("router.reload")

# A changed file is read this many times over ROUTER_RELOAD_SETTLE (one
# read every settle / SETTLE_READS, within these bounds) before it is applied.
SETTLE_READS = 4
MIN_STEP = 0.02
MAX_STEP = 0.5
# A file modified this recently is hashed on every poll (see the docstring).
RACY_WINDOW = 2.0
# How often an unrecorded registry is tried again when polling is off.
REGISTRY_RETRY = 5.0

# A content refused for a reason outside the file is tried again after this.
RETRY_REFUSED = 30.0


def hold_sighup() -> None:
    """In a long-running command's main process, before anything else: a
    SIGHUP must never end a router process. It is ignored until a process's
    Reloader handles it, and uvicorn's multi-process supervisor, which would
    restart its server processes on SIGHUP, forwards it to them instead:
    each reloads in place. (The server processes uvicorn spawns start with
    SIGHUP at its default, since the supervisor handles it: router.web.app's
    app_from_env ignores it first thing.)"""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from uvicorn.supervisors.multiprocess import Multiprocess

    Multiprocess.handle_hup = _forward_sighup  # type: ignore[method-assign]


def _forward_sighup(self: Any) -> None:
    """Multiprocess.handle_hup, run in uvicorn's supervisor loop."""
    pids = [p.pid for p in self.processes if p.pid is not None and p.process.is_alive()]
    log.info("SIGHUP: asking the %d server processes to reload the routes file", len(pids))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)


class RoutesState(Protocol):
    """What a reload switches in the app's state (router.web.state.RouterState)."""

    config: Config

    def use_config(self, config: Config) -> None: ...


class IngestSwitch:
    """The HTTP side of a reload: the app's state switches to the new
    routes, and a path not served before gets a handler."""

    def __init__(
        self,
        app: Litestar,
        state: RoutesState,
        handler: Callable[[str], list[HTTPRouteHandler]],
    ) -> None:
        self.app = app
        self.state = state
        self.handler = handler  # path -> its ingest handlers, POST and GET (router.web.app)
        # (route key, method): a format with a GET handshake adds GET.
        self.registered = {
            (route_key(r.path), method)
            for r in state.config.routes
            for method in ("POST", "GET")
            if method == "POST" or (r.format is not None and r.format.verify is not None)
        }

    def switch(self, config: Config) -> None:
        # No await in here: no request sees the routes half switched. Should
        # registering a new path raise, the state goes back to the old routes
        # (a handler already registered for a path the running config does
        # not have answers 404).
        old = self.state.config
        self.state.use_config(config)  # the handlers are built from it
        try:
            for route in config.routes:
                key = route_key(route.path)
                wants_get = route.format is not None and route.format.verify is not None
                if (key, "POST") in self.registered and (
                    not wants_get or (key, "GET") in self.registered
                ):
                    continue
                for handler in self.handler(route.path):
                    method = next(iter(handler.http_methods))
                    if (key, method) not in self.registered:
                        self.app.register(handler)
                        self.registered.add((key, method))
        except BaseException:
            self.state.use_config(old)
            raise


FileState = tuple[int, int, int, int]  # device, inode, size, mtime (ns)


def _stat(path: str) -> FileState | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str) -> bytes | None:
    try:
        return read_routes_file(path)  # a regular file of at most 1 MiB
    except ConfigError:
        return None  # load() names the reason


def _digest(content: bytes | None) -> bytes:
    return b"unreadable" if content is None else hashlib.sha256(content).digest()


def _added_or_changed(old: Config, new: Config) -> list[str]:
    """The destinations a reload adds or changes (as _changes says)."""
    return [n for n, d in new.destinations.items() if old.destinations.get(n) != d]


def _changes(old: Config, new: Config) -> str:
    """What a reload changed, in a few words for the log."""
    parts = []
    old_routes = {route_key(r.path): r for r in old.routes}
    new_routes = {route_key(r.path): r for r in new.routes}
    for label, names in (
        ("routes added", [r.path for k, r in new_routes.items() if k not in old_routes]),
        ("routes removed", [r.path for k, r in old_routes.items() if k not in new_routes]),
        (
            "routes changed",
            [
                r.path
                for k, r in new_routes.items()
                if k in old_routes and old_routes[k].settings != r.settings
            ],
        ),
        ("destinations added", [n for n in new.destinations if n not in old.destinations]),
        ("destinations removed", [n for n in old.destinations if n not in new.destinations]),
        (
            "destinations changed",
            [
                n
                for n, d in new.destinations.items()
                if n in old.destinations and old.destinations[n] != d
            ],
        ),
    ):
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    return "; ".join(parts) or "nothing that changes routing or delivery"


class Reloader:
    """Watches one process's routes file and applies a new valid one to its
    ingest routes (`ingest`) and its delivery workers (`workers`), either of
    which may be absent (`router api`, `router worker`)."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        redis: Redis,
        *,
        workers: Workers | None = None,
        ingest: IngestSwitch | None = None,
    ) -> None:
        self.settings = settings
        self.file = settings.routes_file
        self.config = config  # the running config
        self.redis = redis
        self.workers = workers
        self.ingest = ingest
        # For status, metrics and tests: new configs applied, looks at the
        # file done (polls and SIGHUPs), and the last refusal (None once one
        # applies).
        self.reloads = 0
        self.looks = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._sighup = False
        self._closing = False
        self._seen: FileState | None = None
        self._seen_digest: bytes | None = None
        self._retry_at: float | None = None  # a refusal outside the file: when to try again
        self._recorded = False  # the registry has this config's names

    # -- lifecycle -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reloader]:
        """Watch while the block runs. On leaving, a reload being applied
        finishes first (so shutdown never meets a half-switched process)."""
        loop = asyncio.get_running_loop()
        handling = False
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request)
            handling = True
        except (RuntimeError, ValueError, NotImplementedError):
            # Not the main thread (the tests' in-process servers): the
            # file watch alone.
            log.debug("SIGHUP not handled in this thread; watching %s only", self.file)
        # The first poll loads the file and compares it with the running
        # config (it may have changed since the process loaded it): a no-op
        # when it has not.
        task = asyncio.create_task(self._run(), name="routes-reload")
        try:
            yield self
        finally:
            self._closing = True
            self._wake.set()
            if handling:
                loop.remove_signal_handler(signal.SIGHUP)
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # never fatal, to the end
            await task

    def request(self) -> None:
        """Reload now, changed or not (SIGHUP)."""
        self._sighup = True
        self._wake.set()

    async def _run(self) -> None:
        poll = self.settings.routes_poll
        # The first look comes at once, even with polling off: the file may
        # have changed since this process loaded it, before SIGHUP was
        # handled here (a signal meanwhile was ignored: hold_sighup).
        first = True
        while not self._closing:
            if not self._recorded:
                await self._record()
            if not first:
                timeout: float | None = poll if poll > 0 else None
                if not self._recorded:
                    timeout = min(timeout or REGISTRY_RETRY, REGISTRY_RETRY)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
            if self._closing:
                return
            forced, self._sighup = self._sighup, False
            try:
                if forced:  # one line per SIGHUP: reloaded, unchanged or refused
                    self._seen = _stat(self.file)
                    content = _read(self.file)
                    self._seen_digest = _digest(content)
                    await self.reload("SIGHUP", forced=True, data=content)
                elif first or poll > 0:
                    changed, content = await self._changed()
                    if changed:
                        await self.reload("file changed", data=content)
            except Exception:
                # A bug here must not end the watch (nor the process).
                log.exception("reloading %s failed; the running config is kept", self.file)
            self.looks += 1
            if first:
                log.info(
                    "%s is reloaded on SIGHUP%s",
                    self.file,
                    f" and looked at every {poll:g}s" if poll > 0 else " (ROUTER_ROUTES_POLL=0)",
                )
            first = False

    async def _changed(self) -> tuple[bool, bytes | None]:
        """Whether the file now holds a content not looked at yet, and that
        content (None: unreadable), once it has held still (_settled)."""
        state = _stat(self.file)
        racy = state is not None and time.time() - state[3] / 1e9 < RACY_WINDOW
        retry = self._retry_at is not None and time.monotonic() >= self._retry_at
        if state == self._seen and not racy and not retry:
            return False, None
        settled = await self._settled()
        if settled is None:  # a SIGHUP (it reads the file itself) or shutdown came first
            return False, None
        self._seen, content = settled
        digest = _digest(content)
        if digest == self._seen_digest and not retry:
            return False, None
        self._retry_at = None
        self._seen_digest = digest
        return True, content

    async def _settled(self) -> tuple[FileState | None, bytes | None] | None:
        """The file's stat and content once both have held still for
        ROUTER_RELOAD_SETTLE: read several times over it, and any change
        (inode, size, mtime or content, or a write during a read) starts
        the wait over. A writer that pauses mid-file (a slow upload, an
        editor writing in place) leaves a valid prefix for a moment:
        applying it dropped the routes still to come, which answered 404.
        A file whose mtime is already that old has held still that long
        (the usual case at start). None: a SIGHUP or shutdown came first.
        A file that never holds still is never applied (SIGHUP takes it as
        it is)."""
        settle = self.settings.reload_settle
        step = min(max(settle / SETTLE_READS, MIN_STEP), MAX_STEP)
        last: tuple[FileState | None, bytes] | None = None
        since = 0.0
        while True:
            before = _stat(self.file)
            content = _read(self.file)
            after = _stat(self.file)
            if before == after:
                snapshot = (after, _digest(content))
                if snapshot != last:
                    last, since = snapshot, time.monotonic()
                age = time.time() - after[3] / 1e9 if after is not None else 0.0
                if time.monotonic() - since >= settle or age >= settle:
                    return after, content
            else:
                last = None  # written while read: wait anew
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), step)
            if self._sighup or self._closing:
                return None

    # -- applying --------------------------------------------------------------

    async def reload(self, reason: str, forced: bool = False, data: bytes | None = None) -> bool:
        """Load the routes file (or `data`, its content as read) and apply
        it whole, or refuse it whole with one log line; True if the running
        config is now the file's."""
        try:
            # `running`: a plugin or variable missing here may have been
            # added since this process started; the refusal says so.
            new = await asyncio.to_thread(load, self.file, None, data, running=True)
        except ConfigError as exc:
            return self._refuse(f"config error: {exc}", transient=False)
        if new == self.config:
            if self.last_error is not None:
                # Refused, then put back as it was: say so, or the refusal
                # would be the last word in the log (and in status).
                log.info("%s: %s is valid again, as the running config", reason, self.file)
                self.last_error = None
            else:
                (log.info if forced else log.debug)("%s: %s unchanged", reason, self.file)
            return True
        refusal = await self._refusal(new)
        if refusal is not None:
            return self._refuse(refusal)
        plan = None
        if self.workers is not None:
            try:
                plan = await self.workers.prepare(new.destinations.values())
            except PluginError as exc:  # names the destination, plugin and error
                return self._refuse(f"{self.file}: {exc}")
            except Exception as exc:
                return self._refuse(
                    f"{self.file}: a destination's plugin failed to start ({one_line(exc)})"
                )
        if self.ingest is not None:
            try:
                self.ingest.switch(new)
            except Exception as exc:
                if plan is not None:
                    await plan.abandon()
                log.exception("%s: serving the new routes failed", reason)
                return self._refuse(f"{self.file}: serving its routes failed ({exc})")
        for warning in new.warnings:
            if warning not in self.config.warnings:
                log.warning("config: %s", warning)
        old, self.config = self.config, new
        if self.workers is not None and plan is not None:
            await self.workers.switch(plan, self.settings.shutdown_grace)
        self.reloads += 1
        self.last_error = None
        log.info("%s: reloaded %s: %s", reason, self.file, _changes(old, new))
        for line in start_log.destination_lines(new, _added_or_changed(old, new)):
            log.info("%s: %s", reason, line)  # as at start (router.runtime.start_log)
        for name, dest in new.destinations.items():
            before = old.destinations.get(name)
            if before is not None and before.settings.ordering_key != dest.settings.ordering_key:
                log.warning(
                    "destination %s: ordering_key is now %s (was %s): messages stored from "
                    "now on wait in other lanes than those stored before, so a "
                    "conversation's new messages can overtake its older ones still waiting",
                    name,
                    dest.settings.ordering_key or "(one global order)",
                    before.settings.ordering_key or "(one global order)",
                )
        self._recorded = False
        await self._record()
        return True

    def _refuse(self, problem: str, transient: bool = True) -> bool:
        self.last_error = problem
        log.error("%s; not reloaded, the running config is kept", problem)
        if transient:
            # Not the file's fault (a plugin that could not start yet, a
            # shard count the stored messages hold back): the same content
            # is tried again at the next look after RETRY_REFUSED.
            self._retry_at = time.monotonic() + RETRY_REFUSED
        return False

    async def _refusal(self, new: Config) -> str | None:
        """Why `new` cannot be applied in this process now, or None."""
        for name, dest in new.destinations.items():
            running = self.config.destinations.get(name)
            if running is not None and running.settings.shards != dest.settings.shards:
                return (
                    f"{self.file}: destination {name}: shards cannot change while the router "
                    f"runs (ingest in flight and processes not reloaded yet would still write "
                    f"the old shards); set shards back to {running.settings.shards}, or stop "
                    "every process, let the destination drain and start with the new count"
                )
        if self.workers is not None:
            problem = shard_layout.claim_loops_problem(
                self.file, new.destinations.values(), self.settings.redis_connections
            )
            if problem is not None:
                return problem
        added = [d for n, d in new.destinations.items() if n not in self.config.destinations]
        if not added:
            return None
        try:
            async with asyncio.timeout(self.settings.ingest_deadline):
                return await shard_layout.refusal(self.redis, added)
        except (RedisError, OSError, TimeoutError) as exc:
            # As at start: not a reason to refuse; the new destinations'
            # workers check again before they claim anything.
            log.warning("Redis did not answer the shard check of a reload (%s)", exc or "timeout")
            return None

    async def _record(self) -> None:
        """Put the running destinations in the registry and warn about
        orphans; tried again later if Redis does not answer."""
        names = list(self.config.destinations)
        try:
            async with asyncio.timeout(self.settings.ingest_deadline):
                await orphans.record(self.redis, names)
                orphaned = await orphans.orphaned_destinations(self.redis, names)
        except (RedisError, OSError, TimeoutError):
            return
        self._recorded = True
        if orphaned:
            log.warning(
                "orphaned destinations (not in %s, still holding messages or dead letters in "
                "Redis, kept and not delivered): %s; add them back to deliver them",
                self.file,
                ", ".join(orphaned),
            )

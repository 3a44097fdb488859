"""`router status`: the queues as a table (rich), once or refreshed
(--watch), or one conversation; --json for scripts (the queues, and for
one destination its conversations waiting longest and those paused). The
table is followed by the routes keeping unroutable items, when any is, and
for one destination by its conversations waiting longest and the
conversations an operator paused."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from router.config.durations import age
from router.ops import logs, redaction
from router.queue import unroutable
from router.queue.inspection import KeyState, PausedKey
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.queue.status import DestinationStatus, Layout, rate, read_status
from router.queue.unroutable import RouteCount

# One-shot status: the rate is measured over this long.
RATE_WINDOW = 1.0


def _console() -> Console:
    """Rich's console; piped (not a terminal), wide enough that no column is
    cut (rich would assume 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _plain(text: str) -> Text:
    return Text(logs.escape(text))


def table(
    now: list[DestinationStatus], before: list[DestinationStatus] | None, title: str
) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("destination")
    for column in ("messages", "ready", "in flight", "delayed", "blocked", "dead"):
        t.add_column(column, justify="right")
    t.add_column("oldest", justify="right")
    t.add_column("rate/s", justify="right")
    t.add_column("state")
    previous = {s.name: s for s in before or []}
    for s in now:
        r = rate(previous[s.name], s) if s.name in previous else None
        state = Text("ok", style="green")
        if s.orphaned:
            state = Text("orphaned", style="bold red")
        elif s.paused:
            state = Text("paused", style="yellow")
        elif s.health == "down" and s.down_since_ms is not None:
            down_for = age(max(0.0, s.read_at - s.down_since_ms / 1000))
            state = Text(f"down {down_for} (probing)", style="bold red")
        elif s.health == "held" and s.held_until_ms is not None:
            held_for = age(max(0.0, s.held_until_ms / 1000 - s.read_at))
            state = Text(f"held {held_for} (Retry-After)", style="yellow")
        if s.paused_keys:
            state.append(f", {s.paused_keys} conversation(s) paused", style="yellow")
        t.add_row(
            s.name,
            str(s.messages),
            str(s.ready),
            str(s.in_flight),
            str(s.delayed),
            Text(str(s.blocked), style="red" if s.blocked else ""),
            Text(str(s.dead), style="red" if s.dead else ""),
            age(s.oldest_age_seconds),
            "-" if r is None else f"{r:.1f}",
            state,
        )
    return t


def unroutable_table(counts: list[RouteCount]) -> Table | None:
    """Routes keeping items answered 200 and not routed (router.queue.unroutable);
    None when there are none (nothing to show)."""
    shown = [c for c in counts if c.kept or c.trimmed]
    if not shown:
        return None
    t = Table(
        title="unroutable items (answered 200, not routed: `router unroutable list ROUTE`)",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    t.add_column("route")
    t.add_column("kept", justify="right")
    t.add_column("trimmed", justify="right")
    for c in shown:
        t.add_row(
            _plain(c.route),
            Text(str(c.kept), style="red" if c.kept else ""),
            Text(str(c.trimmed), style="red" if c.trimmed else ""),
        )
    return t


def _with_unroutable(queues: Table, counts: list[RouteCount]) -> Group:
    extra = unroutable_table(counts)
    return Group(queues) if extra is None else Group(queues, extra)


def as_json(
    now: list[DestinationStatus],
    before: list[DestinationStatus] | None,
    waiting: dict[str, list[KeyState]] | None = None,
    paused: dict[str, list[PausedKey]] | None = None,
) -> str:
    """Each destination's figures; with `waiting`, a destination's
    conversations waiting longest too (`waiting_longest`); with `paused`,
    its paused conversations (`paused_conversations`)."""
    previous = {s.name: s for s in before or []}
    out: dict[str, Any] = {}
    for s in now:
        fields = dataclasses.asdict(s)
        del fields["name"], fields["read_at"]
        fields["rate_per_second"] = rate(previous[s.name], s) if s.name in previous else None
        if waiting is not None and s.name in waiting:
            fields["waiting_longest"] = [dataclasses.asdict(k) for k in waiting[s.name]]
        if paused is not None and s.name in paused:
            fields["paused_conversations"] = [dataclasses.asdict(p) for p in paused[s.name]]
        out[s.name] = fields
    return json.dumps(out, indent=2)


def key_view(destination: str, state: KeyState) -> Table:
    t = Table(title=_plain(f"{destination} / {state.key}"), box=box.SIMPLE, show_header=False)
    t.add_column(style="bold")
    t.add_column()
    now_ms = time.time() * 1000
    paused = state.paused and state.state != "paused"
    t.add_row("state", state.state + (" (paused by an operator)" if paused else ""))
    t.add_row("messages", str(state.messages))
    # Ids and errors are outside text: never rich markup, never raw controls.
    t.add_row("head message", _plain(state.head_id or "-"))
    if state.head_arrival_ms is not None:
        t.add_row("head waiting", age((now_ms - state.head_arrival_ms) / 1000))
    t.add_row("failed attempts", str(state.attempts))
    t.add_row("last error", _plain(state.last_error or "-"))
    if state.next_try_ms is not None:
        t.add_row("next try", f"in {age(max(0.0, state.next_try_ms - now_ms) / 1000)}")
    return t


# How many conversations `router status DEST` lists under its destination.
LONGEST_WAITING = 10
# How many paused conversations its table lists (--json: all of them).
PAUSED_SHOWN = 50


def paused_table(destination: str, paused: list[PausedKey]) -> Table | None:
    """The conversations an operator paused, paused longest first (None: none)."""
    if not paused:
        return None
    more = len(paused) - PAUSED_SHOWN
    t = Table(
        title=_plain(
            f"conversations of {destination} paused (`router resume {destination} KEY`)"
            + (f"; the first {PAUSED_SHOWN} of {len(paused)}" if more > 0 else "")
        ),
        box=box.SIMPLE,
        title_justify="left",
    )
    t.add_column("key")
    t.add_column("paused for", justify="right")
    t.add_column("state")
    now_ms = time.time() * 1000
    for p in paused[:PAUSED_SHOWN]:
        t.add_row(
            _plain(p.key),
            age(max(0.0, now_ms - p.since_ms) / 1000),
            "held (its turn came)" if p.parked else "not its turn yet",
        )
    return t


def waiting_table(destination: str, states: list[KeyState]) -> Table | None:
    """The conversations whose head message has waited longest (None: no
    message waits)."""
    if not states:
        return None
    t = Table(
        title=_plain(f"conversations of {destination} waiting longest"),
        box=box.SIMPLE,
        title_justify="left",
    )
    for column in ("key", "state", "head waiting", "messages", "failed attempts"):
        t.add_column(column, justify="left" if column in ("key", "state") else "right")
    t.add_column("last error", overflow="fold")
    now_ms = time.time() * 1000
    for s in states:
        waited = None if s.head_arrival_ms is None else (now_ms - s.head_arrival_ms) / 1000
        t.add_row(
            _plain(s.key),
            s.state,
            age(waited),
            str(s.messages),
            str(s.attempts),
            _plain((s.last_error or "-")[:120]),
        )
    return t


async def show(
    redis: Any,
    scripts: Scripts,
    layout: Layout,
    watch: float | None,
    as_json_output: bool,
    configured: Collection[str] | None = None,
    waiting: str | None = None,
) -> int:
    """Print the table once (rate over RATE_WINDOW), or refresh it every
    `watch` seconds until interrupted; with `configured` (every configured
    destination), orphaned destinations too; with `waiting` (a destination
    of `layout`), its conversations waiting longest under the table."""
    console = _console()
    conversations = (
        None if waiting is None else ShardedQueue(redis, scripts, waiting, layout[waiting])
    )

    async def longest() -> list[KeyState]:
        if conversations is None:
            return []
        states = await conversations.longest_waiting(LONGEST_WAITING)
        return [_redacted(s) for s in states]

    async def paused() -> list[PausedKey]:
        return [] if conversations is None else await conversations.paused_keys()

    def with_waiting(group: Group, states: list[KeyState], held: list[PausedKey]) -> Group:
        shown = [waiting_table(waiting or "", states), paused_table(waiting or "", held)]
        return Group(group, *[t for t in shown if t is not None])

    before = await read_status(redis, scripts, layout, configured)
    if watch is None:
        await asyncio.sleep(RATE_WINDOW)
        now = await read_status(redis, scripts, layout, configured)
        if as_json_output:
            extra = {} if waiting is None else {waiting: await longest()}
            held = {} if waiting is None else {waiting: await paused()}
            print(as_json(now, before, extra, held))
        else:
            counts = await unroutable.counts(scripts)
            queues = _with_unroutable(table(now, before, "queues"), counts)
            console.print(with_waiting(queues, await longest(), await paused()))
        return 0

    async def frame(
        now: list[DestinationStatus], previous: list[DestinationStatus] | None
    ) -> Group:
        stamp = time.strftime("%H:%M:%S")
        queues = table(now, previous, f"queues at {stamp} (every {watch:g}s; Ctrl-C to stop)")
        return with_waiting(
            _with_unroutable(queues, await unroutable.counts(scripts)),
            await longest(),
            await paused(),
        )

    async with _until_interrupted() as interrupted:

        async def tick() -> bool:
            """Wait `watch` seconds; False once Ctrl-C (or SIGTERM) came."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), watch)
            return not interrupted.is_set()

        if not console.is_terminal:
            # Piped (a log, `tee`): one table per refresh, one after the other.
            console.print(await frame(before, None))
            while await tick():
                now = await read_status(redis, scripts, layout, configured)
                console.print(await frame(now, before))
                before = now
            return 0
        with Live(await frame(before, None), console=console, auto_refresh=False) as live:
            while await tick():
                now = await read_status(redis, scripts, layout, configured)
                live.update(await frame(now, before), refresh=True)
                before = now
    return 0


@contextlib.asynccontextmanager
async def _until_interrupted() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs. Not asyncio's
    own Ctrl-C handling, which cancels the main task: a cancellation that
    lands inside a Redis read can be swallowed there, and the watch then
    ran on after Ctrl-C (seen in full test runs, where reads are slow)."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupted.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signals here: Ctrl-C as usual
    try:
        yield interrupted
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _redacted(state: KeyState) -> KeyState:
    if state.last_error is None:  # stored before a fix, it may hold a secret
        return state
    return dataclasses.replace(state, last_error=redaction.known(state.last_error))


async def show_key(queues: ShardedQueue, name: str, key: str, as_json_output: bool) -> int:
    state = _redacted(await queues.key_state(key))
    if as_json_output:
        print(json.dumps(dataclasses.asdict(state), indent=2))
    else:
        _console().print(key_view(name, state))
    return 0

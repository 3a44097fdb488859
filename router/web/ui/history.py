"""The last minutes of the figures, for the dashboard's charts and rates.

A background task (started in the app's lifespan only when the dashboard
is on) reads the status every SAMPLE_EVERY seconds into a ring buffer
holding SPAN seconds. The buffer is this process's own: several processes
each keep one, all reading the same Redis, so their charts agree but for
the moments they sampled; a restarted process starts with an empty chart.
Nothing is written to Redis for it.

Charts are drawn here, server-side, as SVG polylines (no JS library, no
inline style: the Content-Security-Policy forbids both).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from redis.exceptions import RedisError

from router.ops.cancelling import cancel_and_wait
from router.queue.status import DestinationStatus, rate
from router.web.state import RouterState

log = logging.getLogger("router.ui")

SAMPLE_EVERY = 5.0  # seconds between samples
SPAN = 15 * 60.0  # seconds of history kept and charted


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time() of the reading
    figures: dict[str, DestinationStatus]


class History:
    def __init__(self, every: float | None = None, span: float = SPAN) -> None:
        self.every = every or SAMPLE_EVERY  # read now: the tests shorten it
        self.span = span
        self.samples: deque[Sample] = deque(maxlen=int(span / self.every) + 1)

    def add(self, statuses: Iterable[DestinationStatus]) -> None:
        """One reading; it is dated by when it was read from Redis (the
        reader may hand out one up to a second old)."""
        figures = {s.name: s for s in statuses}
        at = max((s.read_at for s in figures.values()), default=time.time())
        if self.samples and self.samples[-1].at == at:
            return  # the same reading again
        self.samples.append(Sample(at, figures))

    def series(self, name: str, field: str) -> list[tuple[float, float]]:
        """(time, value) of one figure of one destination, oldest first."""
        return [
            (s.at, float(getattr(s.figures[name], field)))
            for s in self.samples
            if name in s.figures
        ]

    def rates(self, name: str) -> list[tuple[float, float]]:
        """Messages delivered per second between consecutive samples."""
        out = []
        for before, after in itertools.pairwise(s for s in self.samples if name in s.figures):
            r = rate(before.figures[name], after.figures[name])
            if r is not None:
                out.append((after.at, r))
        return out

    def rate(self, name: str, current: DestinationStatus, window: float = 60.0) -> float | None:
        """Delivered per second over about the last `window` seconds: from
        the oldest sample in it to `current` (read now); None without one."""
        for s in self.samples:
            if name in s.figures and current.read_at - s.at <= window + self.every:
                if current.read_at - s.figures[name].read_at < 1.0:
                    return None  # too short to say
                return rate(s.figures[name], current)
        return None


async def sample_forever(state: RouterState, history: History) -> None:
    """Read the figures into `history` every `history.every` seconds, until
    cancelled. A failed read (Redis away) leaves a gap in the charts."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        try:
            if state.status is not None:
                async with asyncio.timeout(max(history.every, 1.0)):
                    history.add(await state.status.read())
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("dashboard sample skipped: %s", exc or "timeout")
        next_at += history.every
        next_at = max(next_at, loop.time())  # after a slow read, no burst to catch up
        await asyncio.sleep(next_at - loop.time())


@contextlib.asynccontextmanager
async def sampling(state: RouterState, history: History) -> AsyncIterator[None]:
    task = asyncio.create_task(sample_forever(state, history), name="router-ui-sampler")
    try:
        yield
    finally:
        await cancel_and_wait(task)  # for sure (router.ops.cancelling)


# -- charts ------------------------------------------------------------------

WIDTH, HEIGHT = 600, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 20  # room for the axis labels


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    css: str  # s0..s5: the colour, from ui.css
    segments: list[str]  # SVG "x,y x,y ..." per unbroken stretch
    last: float | None  # the latest value, for the legend


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    lines: list[Line]
    y_max: float
    y_ticks: list[tuple[float, str]]  # (y in the viewBox, label)
    x_ticks: list[tuple[float, str]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    bottom_edge: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not any(line.segments for line in self.lines)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)  # pragma: no cover


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def chart(
    title: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    now: float,
    span: float = SPAN,
    gap: float | None = None,
) -> Chart:
    """A line chart of `series` (label, [(time, value)]) over the `span`
    seconds before `now`; a stretch with no sample for `gap` seconds breaks
    its line rather than drawing a slope across what nobody saw."""
    gap = gap or 2.5 * SAMPLE_EVERY
    start = now - span
    y_max = nice_ceiling(max((v for _, pts in series for t, v in pts if t >= start), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - start) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / y_max * plot_h

    lines = []
    for i, (label, points) in enumerate(series):
        segments: list[list[str]] = []
        previous: float | None = None
        for t, v in points:
            if t < start:
                continue
            if previous is None or t - previous > gap:
                segments.append([])
            segments[-1].append(f"{x(t):.1f},{y(v):.1f}")
            previous = t
        # A lone point draws nothing as a polyline: repeat it a pixel on.
        drawn = [" ".join(s if len(s) > 1 else [s[0], _nudge(s[0])]) for s in segments]
        lines.append(Line(label, f"s{i % 6}", drawn, points[-1][1] if points else None))
    y_ticks = [(y(v), _number(v)) for v in (0.0, y_max / 2, y_max)]
    minutes = int(span // 60)
    step = 5 if minutes >= 10 else 1
    x_ticks = [
        (x(now - m * 60), "now" if m == 0 else f"-{m} min") for m in range(minutes, -1, -step)
    ]
    return Chart(title, lines, y_max, y_ticks, x_ticks)


def _nudge(point: str) -> str:
    px, py = point.split(",")
    return f"{float(px) + 1:.1f},{py}"

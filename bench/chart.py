"""The report's ratios as a picture: an SVG of horizontal bars, written by hand
(no plotting library to install), for docs/benchmarks.md.

One group of bars per case (an ingest or delivery case), one bar per
contender (the router, the router in another configuration, the peers),
each bar its rate over the case's floor, which is the vertical line at 1.0.
Plain data in, so report.py can feed it whatever ratios its tables hold:

    write_svg([("ingest (floor: Litestar + one RPUSH)", {"router": 0.92, "ceiling": 1.6}),
               ("delivery: 1,000 wa_ids, 64 in flight (floor: aiohttp alone)",
                {"router": 0.55, "router, aiohttp transport": 0.08, "arq": 0.3})],
              "docs/benchmarks.svg", title="...", targets={...})

    .venv/bin/python bench/chart.py       # writes an example to /tmp/bench-chart-demo.svg
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 900
LABEL_W = 250  # the contenders' names, right-aligned before the bars
PLOT_X = LABEL_W + 16
PLOT_W = WIDTH - PLOT_X - 70  # room after the longest bar for its value
BAR_H = 14
BAR_GAP = 4
GROUP_HEAD = 22  # the case's title above its bars
GROUP_GAP = 14
TOP = 58  # title and axis labels
FONT = "font-family='system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'"
# Colour-blind-safe (Okabe-Ito); the router always takes the first.
PALETTE = ("#0072B2", "#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#999999")
CAP = 3.0  # the axis never goes past this; longer bars are cut and marked


def _axis_max(values: list[float]) -> float:
    top = max([1.0, *values])
    step = 0.25 if top <= 1.5 else 0.5
    return min(CAP, math.ceil(top * 1.05 / step) * step)


def _colours(rows: list[tuple[str, dict[str, float]]]) -> dict[str, str]:
    """One colour per contender name, the same in every group; "router" first."""
    names: list[str] = []
    for _, bars in rows:
        names += [n for n in bars if n not in names]
    names = sorted(names, key=lambda n: (not n.startswith("router"), names.index(n)))
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def svg(
    rows: list[tuple[str, dict[str, float]]],
    title: str = "Rate over the floor (1.0 = the floor, same run)",
    targets: dict[str, float] | None = None,
    note: str | None = None,
) -> str:
    """The SVG text. rows: (case label, {contender: ratio to the case's floor}),
    drawn in order; nan ratios are left out. targets: case label -> the
    router's target ratio, drawn as a red tick on that group's first bar."""
    targets = targets or {}
    rows = [(case, {k: v for k, v in bars.items() if v == v}) for case, bars in rows]
    values = [v for _, bars in rows for v in bars.values()]
    values += [t for t in targets.values() if t == t]
    top = _axis_max(values)
    colours = _colours(rows)

    def x(v: float) -> float:
        return PLOT_X + PLOT_W * min(v, top) / top

    height = TOP + sum(GROUP_HEAD + len(b) * (BAR_H + BAR_GAP) + GROUP_GAP for _, b in rows)
    footer = 30 if note or targets else 12
    height += footer
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' {FONT} font-size='12'>",
        f"<rect width='{WIDTH}' height='{height}' fill='white'/>",
        f"<text x='16' y='22' font-size='15' font-weight='600'>{escape(title)}</text>",
    ]
    # grid and axis labels
    step = 0.25 if top <= 1.5 else 0.5
    bottom = height - footer
    for k in range(round(top / step) + 1):
        v = k * step
        out.append(
            f"<line x1='{x(v):.1f}' y1='{TOP - 8}' x2='{x(v):.1f}' y2='{bottom}' stroke='#e5e5e5'/>"
        )
        out.append(
            f"<text x='{x(v):.1f}' y='{TOP - 12}' text-anchor='middle' fill='#666'>{v:g}</text>"
        )
    y = TOP
    for case, bars in rows:
        out.append(f"<text x='16' y='{y + 15}' font-weight='600'>{escape(case)}</text>")
        y += GROUP_HEAD
        first = True
        for name, value in bars.items():
            colour = colours[name]
            width = max(1.0, x(value) - PLOT_X)
            weight = " font-weight='600'" if name == "router" else ""
            out.append(
                f"<text x='{LABEL_W}' y='{y + BAR_H - 3}' text-anchor='end'{weight}>"
                f"{escape(name)}</text>"
            )
            out.append(
                f"<rect x='{PLOT_X}' y='{y}' width='{width:.1f}' height='{BAR_H}' "
                f"fill='{colour}'><title>{escape(case)}: {escape(name)} {value:.2f}</title></rect>"
            )
            label = f"{value:.2f}"
            if value > top:  # cut at the axis: say so
                label = f"{value:.2f} &#8594;"
                out.append(
                    f"<path d='M{x(top) - 6:.1f},{y} l6,{BAR_H / 2} l-6,{BAR_H / 2}' "
                    "fill='white' opacity='0.8'/>"
                )
            target = targets.get(case, float("nan")) if first else float("nan")
            after = x(value)
            if target == target and after - 3 <= x(target) <= after + 45:
                after = x(target)  # the tick would cross the value: write it after the tick
            out.append(f"<text x='{after + 5:.1f}' y='{y + BAR_H - 3}'{weight}>{label}</text>")
            if target == target:
                out.append(
                    f"<line x1='{x(target):.1f}' y1='{y - 3}' x2='{x(target):.1f}' "
                    f"y2='{y + BAR_H + 3}' stroke='#C00' stroke-width='2'>"
                    f"<title>target {target:.2f}</title></line>"
                )
            first = False
            y += BAR_H + BAR_GAP
        y += GROUP_GAP
    # the floor, over everything
    out.append(
        f"<line x1='{x(1):.1f}' y1='{TOP - 8}' x2='{x(1):.1f}' y2='{bottom}' stroke='#222' "
        "stroke-width='1.5' stroke-dasharray='5,3'/>"
    )
    out.append(f"<text x='{x(1) + 4:.1f}' y='{TOP - 26}' fill='#222'>floor = 1.0</text>")
    if targets:
        out.append(
            f"<line x1='{WIDTH - 230}' y1='{height - 21}' x2='{WIDTH - 230}' "
            f"y2='{height - 7}' stroke='#C00' stroke-width='2'/>"
        )
        out.append(
            f"<text x='{WIDTH - 224}' y='{height - 10}' fill='#C00'>"
            "target of each group's first bar</text>"
        )
    if note:
        out.append(f"<text x='16' y='{height - 10}' fill='#666'>{escape(note)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(
    rows: list[tuple[str, dict[str, float]]],
    path: str | Path,
    title: str = "Rate over the floor (1.0 = the floor, same run)",
    targets: dict[str, float] | None = None,
    note: str | None = None,
) -> Path:
    """Write svg(rows, ...) to `path`; returns the path."""
    path = Path(path)
    path.write_text(svg(rows, title, targets, note))
    return path


if __name__ == "__main__":
    demo = [
        (
            "ingest (floor: Litestar + one RPUSH)",
            {"router": 0.92, "framework ceiling (no Redis)": 1.62},
        ),
        (
            "delivery: 1,000 wa_ids, 64 in flight (floor: aiohttp alone)",
            {
                "router": 0.55,
                "router, aiohttp transport": 0.05,
                "httpx alone": 0.03,
                "arq": 0.30,
                "BullMQ": 0.62,
            },
        ),
        (
            "delivery: 1 wa_id, 1 in flight (floor: aiohttp alone)",
            {"router": 0.72, "router, aiohttp transport": 0.61, "httpx alone": 0.8},
        ),
        (
            "delivery: bot answering after 50 ms (floor: aiohttp alone)",
            {"router": 0.9, "router, aiohttp transport": 0.12, "arq": 0.75, "BullMQ": 4.2},
        ),
    ]
    targets = {
        demo[0][0]: 1.0,
        demo[1][0]: 0.5,
        demo[2][0]: 0.7,
        demo[3][0]: 0.91,
    }
    out = write_svg(demo, "/tmp/bench-chart-demo.svg", targets=targets, note="example data")
    print(out)

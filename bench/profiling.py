"""py-spy profiles (--profile) of the router, summarized as text.

(Not named profile.py: bench/ is first on sys.path and would shadow the
standard library's profile module.)
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

RATE = 250  # samples per second


def record_pid(pyspy: str, pid: int, seconds: int, out: Path) -> list[str]:
    """argv: sample a running process for `seconds`."""
    return [
        *(pyspy, "record", "--pid", str(pid), "--duration", str(seconds)),
        *("--rate", str(RATE), "--format", "raw", "--nonblocking", "-o", str(out)),
    ]


def record_command(pyspy: str, out: Path, argv: list[str]) -> list[str]:
    """argv: run `argv` under py-spy until it exits."""
    return [
        *(pyspy, "record", "--rate", str(RATE), "--format", "raw", "-o", str(out)),
        *("--nonblocking", "--", *argv),
    ]


_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*?)(?::\d+)?\)$")
_REDIS = "redis-py (commands, EVALSHA, replies, its socket writes)"
_HTTPX = "httpx + httpcore + h11 client (pool, request, its socket writes)"
_AIOHTTP = "aiohttp client (under the httpx client: pool, request, its socket writes)"
_ROUTER = "router's own code (ingest parse, enqueue args, worker loop, envelope)"
_LIBS = {
    "redis": _REDIS,
    "httpx": _HTTPX,
    "httpcore": _HTTPX,
    "aiohttp": _AIOHTTP,
    "multidict": _AIOHTTP,
    "yarl": _AIOHTTP,
    "litestar": "Litestar (routing, signature/DI, request and response)",
    "uvicorn": "uvicorn server (HTTP parsing: httptools or h11; its socket writes)",
    "router": _ROUTER,
    "router_chatbot": _ROUTER,
}
_SHARED = ("h11", "anyio")  # used by both sides: charged to their caller
_LOOP = "the event loop itself (uvloop or asyncio: epoll, callbacks, task steps)"


def _frame_path(frame: str) -> str:
    m = _FRAME.match(frame)
    path = m.group("path") if m else frame
    return re.sub(r"^.*/(site-packages|python3\.\d+)/", "", path).lstrip("/")


def _group(frames: list[str]) -> str:
    """Charge a sample to the nearest library on its stack, from the leaf up.

    Only frames below the event loop's _run_once count (above it is the CLI
    that started the loop), so a socket write made by redis-py counts as
    redis-py and a bare epoll wait counts as the loop.
    """
    if any("<frozen importlib" in f for f in frames):
        return "imports and start-up"
    # asyncio's loop runs tasks from _run_once; uvloop's is compiled, so
    # py-spy shows its caller (uvloop.run or asyncio's Runner.run) instead.
    loop = max(
        (
            i
            for i, f in enumerate(frames)
            if "._run_once (" in f or f.startswith(("run (uvloop/", "Runner.run (asyncio/"))
        ),
        default=-1,
    )
    shared = None
    for frame in reversed(frames[loop + 1 :]):
        top = _frame_path(frame).split("/", 1)[0].removesuffix(".py")
        if top in _LIBS:
            return _LIBS[top]
        if top in _SHARED and shared is None:
            shared = f"{top} (no caller on the stack)"
    return shared or _LOOP


# The stages of a message's way through the router (issue 23 asks for µs
# per stage): a sample is charged to the stage of the nearest frame from the
# leaf that belongs to one, so a log call made by the attempt is "log lines".
# Approximate where a coroutine resumed from the loop shows only its own
# frames (py-spy on uvloop). (path prefix,
# function prefix or "") -> stage, first match wins.
_STAGES: tuple[tuple[str, str, str], ...] = (
    ("router/queue/message_log.py", "", "message log entry (encode)"),
    ("router/ops/metrics.py", "", "metrics"),
    ("prometheus_client/", "", "metrics"),
    ("router/ops/logs.py", "", "log lines"),
    ("logging/", "", "log lines"),
    ("router/plugin/h1.py", "", "post (HTTP client, request and answer)"),
    ("router/plugin/aiohttp_transport.py", "", "post (HTTP client, request and answer)"),
    ("router/plugin/aiohttp_session.py", "", "post (HTTP client, request and answer)"),
    ("aiohttp/", "", "post (HTTP client, request and answer)"),
    ("httpx/", "", "post (HTTP client, request and answer)"),
    ("httpcore/", "", "post (HTTP client, request and answer)"),
    ("router/plugin/http_sink.py", "", "post (the sink: headers, answer check)"),
    ("router_chatbot/", "", "post (the sink: headers, answer check)"),
    ("router/queue/batching.py", "", "Redis writes, batched (ack or store: pipeline, replies)"),
    ("router/queue/lanes.py", "DestinationQueue.claim", "claim"),
    ("router/queue/lanes.py", "", "ack (its arguments)"),
    ("router/delivery/worker.py", "", "claim"),
    ("router/delivery/attempt.py", "", "attempt (bookkeeping between claim, post and ack)"),
    ("router/queue/envelope.py", "", "envelope (encode or decode)"),
    ("router/queue/enqueue.py", "", "store (enqueue arguments)"),
    ("router/ingest/", "", "parse and route (validate, build the message)"),
    ("router/http/", "", "parse and route (validate, build the message)"),
    ("litestar/", "", "HTTP framework (Litestar: routing, request, response)"),
    ("uvicorn/", "", "HTTP server (uvicorn, httptools)"),
    # Resumed in a task of its own (the batcher's sender, a reply's read):
    # py-spy often shows no router frame above it.
    ("redis/", "", "redis-py (commands and replies: claim, ack or store)"),
)


def _stage(frames: list[str]) -> str:
    if any("<frozen importlib" in f for f in frames):
        return "imports and start-up"
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        func = m.group("func") if m else ""
        path = _frame_path(frame)
        for prefix, func_prefix, stage in _STAGES:
            if path.startswith(prefix) and func.startswith(func_prefix):
                return stage
    return _LOOP


def summarize_profile(title: str, path: Path, seconds: float, units: float, unit: str) -> str:
    """A short text breakdown of a py-spy raw (collapsed stacks) profile."""
    if not path.exists():
        return f"### {title}\n\n(py-spy wrote no profile; see bench/results/logs)\n"
    groups: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        total += count
        groups[_group(frames)] += count
        stages[_stage(frames)] += count
        m = _FRAME.match(frames[-1]) if frames else None
        leaf = f"{m.group('func')} ({_frame_path(frames[-1])})" if m else "?"
        leaves[leaf] += count
    if not total:
        return f"### {title}\n\n(no samples)\n"
    # Socket sends: asyncio's transport write, or (uvloop) the StreamWriter
    # call that went straight to the compiled transport.
    send = sum(
        n
        for leaf, n in leaves.items()
        if leaf.startswith(("_SelectorSocketTransport.write", "StreamWriter.write"))
    )
    # Waiting in epoll: asyncio's selector, or uvloop's loop with no Python
    # frame above it (its C code is invisible to py-spy).
    epoll = sum(
        n
        for leaf, n in leaves.items()
        if leaf.startswith(("EpollSelector.select", "Runner.run (", "run (uvloop/"))
    )
    lines = [
        f"### {title}",
        "",
        f"py-spy at {RATE} Hz: {total} samples in {seconds:.1f} s, i.e. the process was on CPU "
        f"~{total / RATE / seconds:.0%} of the time. {send / total:.0%} of the samples are "
        f"socket send() calls, {epoll / total:.0%} are in epoll or the loop's own C code.",
        "",
        f"| charged to (nearest library from the leaf) | share | µs per {unit} |",
        "| --- | ---: | ---: |",
    ]
    per = 1e6 / RATE / units  # one sample is 4 ms of wall time on CPU
    lines += [f"| {name} | {n / total:.0%} | {n * per:.0f} |" for name, n in groups.most_common()]
    lines.append(f"| total | 100% | {total * per:.0f} |")
    lines += [
        "",
        f"| stage (nearest from the leaf) | share | µs per {unit} |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {n / total:.0%} | {n * per:.0f} |" for name, n in stages.most_common()]
    lines += ["", "| hottest functions (self time) | share |", "| --- | ---: |"]
    lines += [f"| `{leaf}` | {n / total:.1%} |" for leaf, n in leaves.most_common(12)]
    return "\n".join(lines) + "\n"

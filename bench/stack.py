"""The server stacks: the one place that says which event loop and HTTP parser
every uvicorn the bench starts runs on.

The floors (bare_ingest's `/v1/hello` and `/v1/store_message`) are only floors
if they run on the router's own stack. The router chooses its stack from
ROUTER_LOOP and ROUTER_HTTP (router/config/settings.py), "auto" by default: uvloop
and httptools when installed (uvicorn[standard]), asyncio and h11 otherwise.
CHOSEN follows that default and is what the floors, the sink and every
`router` the bench starts run on. COMPARED is the stack the router ran on
before (pure-Python asyncio + h11): the ingest run measures the ceiling, the
floor and the router on it too, so the report shows what the stack buys.
Each ingest case checks the loop and parser its servers have really loaded
(stack.running) and reports a problem when router and floor differ.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Choice:
    """A stack as asked for: uvicorn's --loop/--http, the router's ROUTER_LOOP/ROUTER_HTTP."""

    loop: str  # auto | asyncio | uvloop
    http: str  # auto | h11 | httptools

    @property
    def name(self) -> str:
        return "auto" if (self.loop, self.http) == ("auto", "auto") else f"{self.loop}+{self.http}"


CHOSEN = Choice("auto", "auto")  # the router's default
COMPARED = Choice("asyncio", "h11")  # the pure-Python stack, for what the change buys
STACKS = (CHOSEN, COMPARED)
# Kept for readers of docs/benchmarks.md: the chosen stack.
LOOP, HTTP = CHOSEN.loop, CHOSEN.http


@dataclass(frozen=True)
class Stack:
    loop: str  # asyncio | uvloop
    http: str  # h11 | httptools

    def __str__(self) -> str:
        return f"{self.loop} + {self.http}"


def resolved(choice: Choice = CHOSEN) -> Stack:
    """`choice` with "auto" settled the way uvicorn and the router settle it, in this venv."""
    loop = choice.loop if choice.loop != "auto" else _installed("uvloop") or "asyncio"
    http = choice.http if choice.http != "auto" else _installed("httptools") or "h11"
    return Stack(loop, http)


def _installed(module: str) -> str | None:
    return module if importlib.util.find_spec(module) is not None else None


def uvicorn_argv(app: str, host: str, port: int, choice: Choice = CHOSEN) -> list[str]:
    """How the bench starts a peer's ASGI app: on the stack, one worker, quiet."""
    stack = resolved(choice)
    return [
        sys.executable,
        *("-m", "uvicorn", app, "--host", host, "--port", str(port)),
        *("--loop", stack.loop, "--http", stack.http),
        *("--log-level", "warning", "--no-access-log"),
    ]


def router_env(choice: Choice = CHOSEN) -> dict[str, str]:
    """The environment that puts `router api` on `choice` (set even for "auto",
    so that the caller's environment cannot move it)."""
    return {"ROUTER_LOOP": choice.loop, "ROUTER_HTTP": choice.http}


def server_pids(pid: int) -> list[int]:
    """The processes that serve: `pid` itself, or its uvicorn worker processes
    (ROUTER_PROCESSES > 1: spawned children running multiprocessing's
    spawn_main; a resource tracker, if any, does not count)."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return [pid]
    workers = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return workers or [pid]


def running(pid: int, host: str, port: int) -> Stack | None:
    """The stack a running server is on, found from outside (Linux only).

    Loop: uvloop is a compiled extension, mapped into the process only once
    imported, which uvicorn does only to run on it (with several worker
    processes, every one of them must have it). HTTP: importing httptools
    proves nothing (router/http/server.py imports it when present and may
    still run h11), so ask the server: h11 takes any token as a method and
    hands the request to the app, httptools (llhttp) knows only the
    registered methods and answers 400 itself.
    """
    try:
        maps = [Path(f"/proc/{p}/maps").read_text() for p in server_pids(pid)]
    except OSError:
        return None
    request = b"BENCHPROBE / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        status = conn.recv(64).split(b" ", 2)[1:2]
    uvloop = ["/uvloop/" in m for m in maps]
    return Stack(
        "uvloop" if all(uvloop) else "asyncio" if not any(uvloop) else "mixed",
        "httptools" if status == [b"400"] else "h11",
    )


def describe() -> str:
    """For the report header, e.g. "uvicorn 0.54.0, uvloop + httptools (auto); compared
    with asyncio + h11"."""
    version = importlib.metadata.version("uvicorn")
    return (
        f"uvicorn {version}, **{resolved(CHOSEN)}** (bench/stack.py CHOSEN: "
        f"loop={CHOSEN.loop}, http={CHOSEN.http}, the router's default); "
        f"the stack table also runs everything on {resolved(COMPARED)}"
    )

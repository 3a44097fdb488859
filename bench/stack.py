"""The server stack: the one place that says which event loop and HTTP parser
every uvicorn the bench starts runs on.

The floors (bare_ingest's `/v1/hello` and `/v1/store_message`) are only floors
if they run on the router's own stack. `router api` runs uvicorn.run() from
router/cli.py with uvicorn's default loop and parser today, "auto": uvloop and
httptools when they are installed, asyncio and h11 otherwise. "auto" here
follows that; if router/cli.py comes to choose (e.g. loop="uvloop",
http="httptools"), put the same values here. Either way the ingest run checks
which loop and parser `router api` runs on against the floor's
(stack.running) and reports a problem when they differ.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

LOOP = "auto"  # uvicorn --loop: auto | asyncio | uvloop
HTTP = "auto"  # uvicorn --http: auto | h11 | httptools


@dataclass(frozen=True)
class Stack:
    loop: str  # asyncio | uvloop
    http: str  # h11 | httptools

    def __str__(self) -> str:
        return f"{self.loop} + {self.http}"


def resolved() -> Stack:
    """LOOP and HTTP with "auto" settled the way uvicorn settles it, in this venv."""
    loop = LOOP if LOOP != "auto" else _installed("uvloop") or "asyncio"
    http = HTTP if HTTP != "auto" else _installed("httptools") or "h11"
    return Stack(loop, http)


def _installed(module: str) -> str | None:
    return module if importlib.util.find_spec(module) is not None else None


def uvicorn_argv(app: str, host: str, port: int) -> list[str]:
    """How the bench starts a peer's ASGI app: on the stack, one worker, quiet."""
    stack = resolved()
    return [
        sys.executable,
        *("-m", "uvicorn", app, "--host", host, "--port", str(port)),
        *("--loop", stack.loop, "--http", stack.http),
        *("--log-level", "warning", "--no-access-log"),
    ]


def running(pid: int, host: str, port: int) -> Stack | None:
    """The stack a running server is on, found from outside (Linux only).

    Loop: uvloop is a compiled extension, mapped into the process only once
    imported, which uvicorn does only to run on it. HTTP: importing httptools
    proves nothing (router/http_server.py imports it when present and may
    still run h11), so ask the server: h11 takes any token as a method and
    hands the request to the app, httptools (llhttp) knows only the
    registered methods and answers 400 itself.
    """
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    request = b"BENCHPROBE / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        status = conn.recv(64).split(b" ", 2)[1:2]
    return Stack(
        "uvloop" if "/uvloop/" in maps else "asyncio",
        "httptools" if status == [b"400"] else "h11",
    )


def describe() -> str:
    """For the report header, e.g. "uvicorn 0.54.0, asyncio + h11 (loop=auto, http=auto)"."""
    version = importlib.metadata.version("uvicorn")
    return f"uvicorn {version}, {resolved()} (bench/stack.py: loop={LOOP}, http={HTTP})"

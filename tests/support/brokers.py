"""What the broker plugins' tests share (nats, mqtt): skipping where the
machine's broker is absent, names unique to one test, bodies whose bytes
tell a re-encoding, posting them in order, the router's count of
failed attempts (GET /metrics), and a NATS server of a test's own (a
configuration the machine's shared one does not have)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.routes import STORE
from tests.support.servers import free_port, port_open


def require(host: str, port: int, broker: str) -> None:
    """Skip the test unless something listens at host:port."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        pytest.skip(f"{broker} not reachable at {host}:{port}")


def unique(prefix: str) -> str:
    """A name no other test (or run) uses: prefix + 10 hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def body(key: str, n: int) -> bytes:
    """Message n of key, as bytes a JSON re-encoding would change (spacing,
    key order, an escaped and a raw non-ASCII character)."""
    return (
        f'{{ "mensaje" :"m{n} ol\\u00e1 ñ",  "wa_id":"{key}" ,"n":{n}, "pad":[1, 2 ,3]}}'
    ).encode()


async def post_in_order(
    router_url: str, keys: list[str], per_key: int, start: int = 0
) -> dict[bytes, str]:
    """Post messages start..start+per_key-1 of each key, interleaved, one at
    a time (so the arrival order per key is the posting order); body -> id."""
    ids: dict[bytes, str] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(start, start + per_key):
            for key in keys:
                raw = body(key, n)
                r = await client.post(
                    router_url + STORE, content=raw, headers={"content-type": "application/json"}
                )
                assert r.status_code == 200, r.text
                ids[raw] = r.json()["id"]
    return ids


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}")
        await asyncio.sleep(0.05)


async def failed_attempts(router_url: str, destination: str) -> float:
    """The router's count of failed attempts to `destination` (its metrics)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(router_url + "/metrics")).text
    pattern = (
        r'^router_deliveries_total\{(?=[^}]*destination="' + re.escape(destination) + r'")'
        r'(?=[^}]*outcome="failed")[^}]*\} (\S+)$'
    )
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


@contextlib.contextmanager
def nats_server(directory: Path, config: str) -> Iterator[int]:
    """A nats-server of the test's own on a free port, with `config` (the
    server's configuration syntax, without `port`): yields its port.
    Skips the test where no nats-server binary is installed."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("no nats-server binary")
    port = free_port()
    path = directory / f"nats-{port}.conf"
    path.write_text(f"port: {port}\nhost: 127.0.0.1\n{config}\n")
    log = directory / f"nats-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, "-c", str(path)], stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if process.poll() is not None:
                raise AssertionError(f"nats-server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("nats-server did not listen within 30s")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""The suite's parallel workers (pytest-xdist): which one this process is,
and the database of a shared Redis (REDIS_URL) that is its own."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis as redis_sync


def worker_index() -> int:
    """0 without xdist (or in its controller), N in worker gwN."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") else 0


def database_for_worker(url: str, index: int | None = None) -> str:
    """`url` with its database moved up by the worker's index, so that
    workers sharing one server never flush each other's data; the test
    session fails with one line if the server has no such database."""
    index = worker_index() if index is None else index
    if index == 0:
        return url
    parts = urlsplit(url)
    if "db=" in parts.query:
        pytest.fail(
            f"REDIS_URL={url}: name the database in the path (redis://host:port/14), "
            "not in ?db=, so each parallel worker can take its own",
            pytrace=False,
        )
    path = parts.path.strip("/")
    base = int(path) if path else 0
    moved = urlunsplit(parts._replace(path=f"/{base + index}"))
    client = redis_sync.Redis.from_url(moved)
    try:
        client.ping()
    except redis_sync.ResponseError as exc:  # "DB index is out of range"
        pytest.fail(
            f"REDIS_URL={url}: parallel worker {index} needs database {base + index} "
            f"({base} + its index) and the server refuses it ({exc}): use a lower "
            "database in REDIS_URL or fewer workers (pytest -n)",
            pytrace=False,
        )
    finally:
        client.close()
    return moved

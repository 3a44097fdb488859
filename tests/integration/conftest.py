"""Fixtures of the integration tests (the root conftest's are visible too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.routes import routes_file
from tests.support.servers import serve


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One API-only router for the module, on the shared server; each test's
    `redis` fixture empties the database."""
    with serve(redis_url, routes_file(tmp_path_factory.mktemp("api") / "routes.yaml")) as server:
        yield server.url

"""router.http.server.protocol_class refuses what it cannot build. (The
protocol against slow and broken clients: tests/integration/test_slow_clients.py.)"""

from __future__ import annotations

import importlib.util

import pytest

from router.http.server import protocol_class


def test_protocol_class_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        protocol_class(1, 10, "h2")
    with pytest.raises(ValueError):
        protocol_class(0, 10)
    with pytest.raises(ValueError):
        protocol_class(1, 0)
    if importlib.util.find_spec("httptools") is None:
        with pytest.raises(ValueError, match="httptools"):
            protocol_class(1, 10, "httptools")

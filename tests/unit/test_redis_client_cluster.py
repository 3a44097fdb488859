"""The cluster client is set up like the single one (no Redis needed: the
client connects on first use): TLS and passwords from the URL, the
write-noting connections, no retries of its own. The same against a real
cluster: tests/process/test_cluster.py."""

from __future__ import annotations

from redis.asyncio.connection import SSLConnection

from router.redis.client import connect_cluster


def test_a_rediss_url_gives_tls_connections_that_note_writes() -> None:
    client = connect_cluster("rediss://:pw@127.0.0.1:7000/0", 10)
    kwargs = client.nodes_manager.connection_kwargs
    assert issubclass(kwargs["connection_class"], SSLConnection)
    assert kwargs["connection_class"].__name__ == "_TlsConnection"
    assert kwargs["password"] == "pw"
    assert client.retry.get_retries() == 0


def test_a_redis_url_gives_plain_connections_that_note_writes() -> None:
    client = connect_cluster("redis://127.0.0.1:7000/0", 10)
    kwargs = client.nodes_manager.connection_kwargs
    assert kwargs["connection_class"].__name__ == "_TcpConnection"
    assert kwargs["max_connections"] == 21  # room for the batchers: 1 + 2 per shard

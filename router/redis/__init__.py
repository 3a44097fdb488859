"""The Redis server: the client with bounded waits, which kind of server
REDIS_URL names (one, Sentinel, Cluster), what its memory settings mean,
and the embedded server `make run` starts."""

"""Destinations' queues in Redis: every key (keys.py), the Lua scripts
(lua/, scripts.py), ingest's writes (enqueue.py), a shard's lanes
(lanes.py), all shards of a destination (sharded_queue.py), what inspecting
a queue answers (inspection.py), group commit, moving and purging, orphaned
destinations, unroutable items and the status figures."""

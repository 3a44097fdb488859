"""Destinations' queues in Redis: every key (keys.py), the Lua scripts
(lua/, scripts.py), per-key lanes (lanes.py), group commit, moving and
purging, orphaned destinations, unroutable items and the status figures."""

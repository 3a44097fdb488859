-- Pause one conversation (`router pause DEST KEY`): none of its messages is
-- attempted until resume_key.lua; an attempt in flight finishes. The key
-- stays where it is: claim.lua parks it when its turn comes, ack.lua does
-- not keep it (_lib.lua's paused_entry).
-- KEYS: paused_keys
local paused_keys = KEYS[1]
-- ARGV: ordering key
-- Returns 1 when it was paused now, 0 when it already was.
return redis.call('HSETNX', paused_keys, ARGV[1], cjson.encode({since = now_ms()}))

-- Resume one paused conversation (`router resume DEST KEY`): a parked key
-- (its turn came while paused) goes to the back of ready, its head first,
-- as when it was last in line; one not parked yet is still in ready, in
-- flight, waiting out a backoff or blocked, and stays there.
-- KEYS: paused_keys, lane, ready, wake
local paused_keys, lane, ready, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- ARGV: ordering key
-- Returns 1 when it was paused, else 0.
local k = ARGV[1]
local entry = paused_entry(paused_keys, k)
if not entry then return 0 end
redis.call('HDEL', paused_keys, k)
-- A parked key's lane is never empty (the scripts that empty one clear
-- the mark); the check costs nothing.
if entry.parked and redis.call('LLEN', lane) > 0 then
  redis.call('RPUSH', ready, k)
  nudge(wake)
end
return 1

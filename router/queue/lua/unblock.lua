-- Put a blocked key back in line: its head message is attempted again.
-- KEYS: blocked, ready, attempts, wake
local blocked, ready, attempts, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- ARGV: ordering key
-- Returns 1, or 0 when the key was not blocked.
local k = ARGV[1]
if redis.call('HDEL', blocked, k) == 0 then return 0 end
redis.call('HDEL', attempts, k)
redis.call('RPUSH', ready, k)
nudge(wake)
return 1

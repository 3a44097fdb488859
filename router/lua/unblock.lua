-- Put a blocked key back in line: its head message is attempted again.
-- KEYS: blocked, ready, attempts, wake   ARGV: ordering key
-- Returns 1, or 0 when the key was not blocked.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
return 1

-- Hand a claimed key back untried (shutdown): it goes to the front of ready.
-- KEYS: ready, leases, owner, wake   ARGV: ordering key, token
-- Returns 1, or 0 when the lease was already lost.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
return 1

-- Hand a claimed key back untried (shutdown): it goes to the front of ready.
-- KEYS: ready, leases, owner, wake
local ready, leases, owner, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- ARGV: ordering key, token
-- Returns 1, or LEASE_LOST.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
redis.call('LPUSH', ready, k)
nudge(wake)
return 1

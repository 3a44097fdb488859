-- Extend the lease of a claim that is still delivering.
-- KEYS: leases, owner
local leases, owner = KEYS[1], KEYS[2]
-- ARGV: ordering key, token, lease ms
-- Returns 1, or LEASE_LOST.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
redis.call('ZADD', leases, 'XX', now_ms() + tonumber(ARGV[3]), k)
return 1

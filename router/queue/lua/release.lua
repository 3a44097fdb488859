-- Hand a claimed key back untried (shutdown): it goes to the front of ready.
-- KEYS: ready, leases, owner, wake, health
local ready, leases, owner, wake, health = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- ARGV: ordering key, token
-- Returns 1, or LEASE_LOST.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
redis.call('LPUSH', ready, k)
-- The probe of a destination that is down was handed back untried: the
-- next probe is due now, not when its lease would have run out.
if redis.call('HGET', health, 'probe_key') == k then
  redis.call('HSET', health, 'probe_at', now_ms())
  redis.call('HDEL', health, 'probe_key')
end
nudge(wake)
return 1

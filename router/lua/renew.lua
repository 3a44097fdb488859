-- Extend the lease of a claim that is still delivering.
-- KEYS: leases, owner   ARGV: ordering key, token, lease ms
-- Returns 1, or 0 when the lease was lost.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1

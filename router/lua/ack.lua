-- The destination acknowledged the head of a lane: remove it.
-- KEYS: lane, ready, leases, owner, attempts, lasterr, wake, delayed
-- ARGV: ordering key, token, lease ms, keep ('1' = may keep the key),
--       the acknowledged envelope
-- Returns -1 when the lease was lost (another claim owns the key now: this
-- delivery was a duplicate and changes nothing). Otherwise {left, next head}:
-- with keep = '1' and nobody else waiting (no key in ready, no backoff due,
-- no lease expired), the caller keeps its claim and gets the next message of
-- the same key at once: one round trip per message for a busy key, without
-- starving other keys or delaying the sweep that only claim does.
local k, token = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[4], k) ~= token then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Idempotent: if the head is no longer the acknowledged envelope, this ack
-- already ran (its reply was lost and the caller retried it); popping again
-- would drop a message nobody delivered.
if redis.call('LINDEX', KEYS[1], 0) == ARGV[5] then
  redis.call('LPOP', KEYS[1])
  redis.call('HDEL', KEYS[5], k)
  redis.call('HDEL', KEYS[6], k)
end
local left = redis.call('LLEN', KEYS[1])
if left > 0 and ARGV[4] == '1' and redis.call('LLEN', KEYS[2]) == 0
    and #redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now, 'LIMIT', 0, 1) == 0
    and #redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1) == 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), k)
  return {left, redis.call('LINDEX', KEYS[1], 0)}
end
redis.call('ZREM', KEYS[3], k)
redis.call('HDEL', KEYS[4], k)
if left > 0 then redis.call('RPUSH', KEYS[2], k) end
-- A slot was freed: a worker held back by max_in_flight may claim now (and
-- sweeps due backoffs and expired leases on the way).
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[8]) > 0 then
  redis.call('LPUSH', KEYS[7], '1')
  redis.call('LTRIM', KEYS[7], 0, 0)
end
return {left, false}

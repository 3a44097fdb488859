-- An attempt at the head of a lane failed: back off, or dead-letter it.
-- KEYS: lane, ready, leases, owner, delayed, attempts, lasterr, wake, dead, blocked
-- ARGV: ordering key, token, delay ms, error, outcome: '0' retry after the
--       delay, '1' dead-letter the head, '2' block the key (the head stays);
--       counted: '1' when an attempt was made, '0' when the worker gave up
--       before trying (the count is already the attempts made)
-- Returns -1 when the lease was lost, else the attempts made so far.
local k, token = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[4], k) ~= token then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[3], k)
redis.call('HDEL', KEYS[4], k)
local attempts
if ARGV[6] == '1' then
  attempts = redis.call('HINCRBY', KEYS[6], k, 1)
else
  attempts = tonumber(redis.call('HGET', KEYS[6], k) or '0')
end
if ARGV[5] == '1' then
  local envelope = redis.call('LPOP', KEYS[1])
  redis.call('RPUSH', KEYS[9], cjson.encode({
    key = k, envelope = envelope, error = ARGV[4], attempts = attempts, dead_at = now}))
  redis.call('HDEL', KEYS[6], k)
  redis.call('HDEL', KEYS[7], k)
  if redis.call('LLEN', KEYS[1]) > 0 then redis.call('RPUSH', KEYS[2], k) end
elseif ARGV[5] == '2' then
  -- The key leaves the scheduling sets until an operator unblocks it.
  redis.call('HSET', KEYS[7], k, ARGV[4])
  redis.call('HSET', KEYS[10], k, cjson.encode({error = ARGV[4], attempts = attempts, blocked_at = now}))
else
  redis.call('HSET', KEYS[7], k, ARGV[4])
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), k)
end
-- Nudge a blocked worker so it recomputes how long it may sleep.
redis.call('LPUSH', KEYS[8], '1')
redis.call('LTRIM', KEYS[8], 0, 0)
return attempts

-- An attempt at the head of a lane failed: back off, dead-letter or block.
-- KEYS: lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads
local lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12]
-- ARGV: ordering key, token, delay ms, error, outcome: '0' retry after the
--       delay, '1' dead-letter the head, '2' block the key (the head stays);
--       counted: '1' when an attempt was made, '0' when the worker gave up
--       before trying (the count is already the attempts made)
-- Returns LEASE_LOST, else the attempts made so far (the one counter of
-- attempts, with claim's count of expired leases).
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
local now = now_ms()
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
local made
if ARGV[6] == '1' then
  made = redis.call('HINCRBY', attempts, k, 1)
else
  made = tonumber(redis.call('HGET', attempts, k) or '0')
end
if ARGV[5] == '1' then
  local envelope = redis.call('LPOP', lane)
  redis.call('RPUSH', dead, cjson.encode({
    key = k, envelope = envelope, error = ARGV[4], attempts = made, dead_at = now}))
  redis.call('HDEL', attempts, k)
  redis.call('HDEL', last_error, k)
  redis.call('HINCRBY', counts, 'messages', -1)
  track_head(heads, lane, k)
  if redis.call('LLEN', lane) > 0 then redis.call('RPUSH', ready, k) end
elseif ARGV[5] == '2' then
  -- The key leaves the scheduling sets until an operator unblocks it.
  redis.call('HSET', last_error, k, ARGV[4])
  redis.call('HSET', blocked, k, cjson.encode({error = ARGV[4], attempts = made, blocked_at = now}))
else
  redis.call('HSET', last_error, k, ARGV[4])
  redis.call('ZADD', delayed, now + tonumber(ARGV[3]), k)
end
-- Nudge a blocked worker so it recomputes how long it may sleep.
nudge(wake)
return made

-- The destination acknowledged the head of a lane: remove it.
-- KEYS: lane, ready, leases, owner, attempts, last_error, wake, delayed, paused, counts, heads, health, failing, throttle, suspects, breaker, log, logged, paused_keys
local lane, ready, leases, owner, attempts, last_error, wake, delayed, paused, counts, heads, health, failing, throttle, suspects, breaker, log, logged, paused_keys =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18], KEYS[19]
-- ARGV: ordering key, token, lease ms, keep ('1' = may keep the key),
--       the acknowledged lane entry, rate limit interval µs ('0': none),
--       rate limit burst, the message id, and its message log entry (JSON;
--       '' or absent: the log is off); a coalesced request (gather.lua):
--       how many messages follow the head in it, then each one's lane
--       entry and message id (all acknowledged together, each logged)
-- Returns LEASE_LOST when another claim owns the key now (this delivery was
-- a duplicate and changes nothing). Otherwise {left, next head or false,
-- keys resumed when this success reopened a destination that was down (its
-- circuit breaker, _lib.lua's reopen), else -1}:
-- with keep = '1' and nobody else waiting (no key in ready, no backoff due,
-- no lease expired), the caller keeps its claim and gets the next message of
-- the same key at once: one round trip per message for a busy key, without
-- starving other keys or delaying the sweep that only claim does.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
local now = now_ms()
-- Idempotent: if the head is no longer the acknowledged envelope, this ack
-- already ran (its reply was lost and the caller retried it); popping again
-- would drop a message nobody delivered.
local rest = group_rest(10)
local function whole_group()
  local found = redis.call('LRANGE', lane, 1, #rest)
  for i, m in ipairs(rest) do
    if found[i] ~= m[1] then return false end
  end
  return true
end
if redis.call('LINDEX', lane, 0) == ARGV[5] and (#rest == 0 or whole_group()) then
  for _ = 0, #rest do redis.call('LPOP', lane) end
  if ARGV[10] then redis.call('HDEL', attempts, GROUP_MARK .. k) end
  redis.call('HDEL', attempts, k)
  redis.call('HDEL', last_error, k)
  redis.call('HINCRBY', counts, 'messages', -1 - #rest)
  redis.call('HINCRBY', counts, 'acked', 1 + #rest)
  track_head(heads, lane, k)
  if (ARGV[9] or '') ~= '' then
    log_entry(log, logged, ARGV[8], k, ARGV[5], ARGV[9], 'delivered', false)
    for _, m in ipairs(rest) do
      log_entry(log, logged, m[2], k, m[1], ARGV[9], 'delivered', false)
    end
  end
end
-- A success: the failures seen so far were not the destination's, this
-- conversation is no longer suspect, and a destination that was down is up
-- again (whoever's attempt this was).
redis.call('DEL', failing)
redis.call('ZREM', suspects, k)
local resumed = -1
if redis.call('HGET', health, 'state') == 'down' then
  resumed = reopen(health, failing, ready, delayed, heads, wake, suspects, breaker, false)
end
local left = redis.call('LLEN', lane)
-- Keeping the key starts the next request: the outbound rate limit must
-- allow one now (checked last: only a kept key takes a start).
local function rate_allows_one()
  local interval = tonumber(ARGV[6] or '0')
  if interval <= 0 then return true end
  local burst = tonumber(ARGV[7])
  local n, tat = throttle_allows(throttle, interval, burst, now, 1)
  if n == 0 then return false end
  throttle_take(throttle, interval, burst, now, tat, 1)
  return true
end
-- (Not while paused or held: the attempt in flight finished, nothing new
-- starts; nor while this conversation is paused: claim.lua parks it.)
if left > 0 and ARGV[4] == '1' and redis.call('LLEN', ready) == 0
    and redis.call('EXISTS', paused) == 0 and redis.call('EXISTS', health) == 0
    and redis.call('HEXISTS', paused_keys, k) == 0
    and #redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1) == 0
    and #redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1) == 0
    and rate_allows_one() then
  redis.call('ZADD', leases, now + tonumber(ARGV[3]), k)
  return {left, redis.call('LINDEX', lane, 0), resumed}
end
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
if left > 0 then redis.call('RPUSH', ready, k) end
-- A slot was freed: a worker held back by max_in_flight may claim now (and
-- sweeps due backoffs and expired leases on the way).
if redis.call('LLEN', ready) > 0 or redis.call('ZCARD', delayed) > 0 then nudge(wake) end
return {left, false, resumed}

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
-- a duplicate and changes nothing). Otherwise {1 when messages are left in
-- the lane, else 0, next head or false, keys resumed when this success
-- reopened a destination that was down (its circuit breaker, _lib.lua's
-- reopen), else -1}:
-- with keep = '1' and nobody else waiting (no key in ready, no backoff due,
-- no lease expired), the caller keeps its claim and gets the next message of
-- the same key at once: one round trip per message for a busy key, without
-- starving other keys or delaying the sweep that only claim does.
-- (Every command counts: this script runs once per message delivered.)
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
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
local acked
if #rest == 0 then
  -- One command where the head is the envelope (nearly always): a head
  -- that is not goes straight back where it was.
  local popped = redis.call('LPOP', lane)
  acked = popped == ARGV[5]
  if popped and not acked then redis.call('LPUSH', lane, popped) end
elseif redis.call('LINDEX', lane, '0') == ARGV[5] and whole_group() then
  acked = true
  for _ = 0, #rest do redis.call('LPOP', lane) end
end
-- What a success clears below exists only after failures: while none of
-- these keys exists (a healthy destination), there is nothing to clear,
-- and one command says so.
local failures = redis.call('EXISTS', attempts, last_error, failing, suspects, health) > 0
local head -- the lane's head now (false: the lane is empty)
if acked then
  if failures then
    if ARGV[10] then
      redis.call('HDEL', attempts, k, GROUP_MARK .. k) -- its pinned group is over too
    else
      redis.call('HDEL', attempts, k)
    end
    redis.call('HDEL', last_error, k)
  end
  -- (Strings, not numbers: _lib.lua says why.)
  local n = #rest == 0 and '1' or string.format('%.0f', 1 + #rest)
  redis.call('HINCRBY', counts, 'messages', '-' .. n)
  redis.call('HINCRBY', counts, 'acked', n)
  head = track_head(heads, lane, k)
  if (ARGV[9] or '') ~= '' then
    log_entry(log, logged, ARGV[8], k, ARGV[5], ARGV[9], 'delivered', false)
    for _, m in ipairs(rest) do
      log_entry(log, logged, m[2], k, m[1], ARGV[9], 'delivered', false)
    end
  end
else
  head = redis.call('LINDEX', lane, '0')
end
-- A success: the failures seen so far were not the destination's, this
-- conversation is no longer suspect, and a destination that was down is up
-- again (whoever's attempt this was).
local resumed = -1
-- `health` exists only while something holds the destination (_lib.lua).
local held = false
if failures then
  redis.call('DEL', failing)
  redis.call('ZREM', suspects, k)
  held = redis.call('EXISTS', health) == 1
  if held and redis.call('HGET', health, 'state') == 'down' then
    resumed = reopen(health, failing, ready, delayed, heads, wake, suspects, breaker, false)
    held = redis.call('EXISTS', health) == 1 -- a Retry-After hold may stay
  end
end
-- Keeping the key starts the next request: the outbound rate limit must
-- allow one now (checked last: only a kept key takes a start).
local function rate_allows_one(now)
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
local waiting -- how many keys are in ready, once looked up
if head and ARGV[4] == '1' then
  waiting = redis.call('LLEN', ready)
  if waiting == 0 and not held and redis.call('EXISTS', paused) == 0
      and redis.call('HEXISTS', paused_keys, k) == 0 then
    local now = now_ms()
    local until_now = string.format('%.0f', now) -- (a string: see the counts)
    if #redis.call('ZRANGEBYSCORE', delayed, '-inf', until_now, 'LIMIT', '0', '1') == 0
        and #redis.call('ZRANGEBYSCORE', leases, '-inf', until_now, 'LIMIT', '0', '1') == 0
        and rate_allows_one(now) then
      redis.call('ZADD', leases, string.format('%.0f', now + tonumber(ARGV[3])), k)
      return {1, head, resumed}
    end
  end
end
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
if head then
  waiting = redis.call('RPUSH', ready, k)
elseif not waiting then
  waiting = redis.call('LLEN', ready)
end
-- A slot was freed: a worker held back by max_in_flight may claim now (and
-- sweeps due backoffs and expired leases on the way).
if waiting > 0 or redis.call('ZCARD', delayed) > 0 then nudge(wake) end
return {head and 1 or 0, false, resumed}

-- The destination acknowledged the head of a lane: remove it.
-- KEYS: lane, ready, leases, owner, attempts, last_error, wake, delayed, paused, counts, heads, health, failing, throttle, suspects, breaker, log, logged, paused_keys, blocked
local lane, ready, leases, owner, attempts, last_error, wake, delayed, paused, counts, heads, health, failing, throttle, suspects, breaker, log, logged, paused_keys, blocked =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18], KEYS[19], KEYS[20]
-- ARGV: ordering key, token, lease ms, keep ('1' = may go on without a
--       claim), the acknowledged lane entry, rate limit interval µs ('0':
--       none), rate limit burst, the message id, its message log entry
--       (JSON; '' or absent: the log is off), the lane prefix and a new
--       token for handing the slot on ('' or absent: never handed on); a
--       coalesced request (gather.lua): how many messages follow the head
--       in it, then each one's lane entry and message id (all acknowledged
--       together, each logged)
-- Returns LEASE_LOST when another claim owns the key now (this delivery was
-- a duplicate and changes nothing). Otherwise {1 when messages are left in
-- the lane, else 0, next head or false, keys resumed when this success
-- reopened a destination that was down (its circuit breaker, _lib.lua's
-- reopen), else -1[, next key, its attempts so far]}.
-- With keep = '1' the caller goes on without a claim of its own, as long as
-- no backoff is due and no lease expired (only claim.lua sweeps those: it
-- gets its turn), the destination is neither paused nor held, and the rate
-- limit allows a start:
-- - nobody else waiting (no key in ready): it keeps its claim and gets the
--   next message of the same key at once: one round trip per message for a
--   busy key;
-- - keys waiting in ready: the slot is handed on to the first of them, as a
--   claim would have taken it after this key went to the back of ready
--   (next key returned, leased under the new token; a claim that would not
--   take it, claimable_head, is passed over as claim.lua does). The task
--   that delivered goes on with it: no claim round trip, no task, per
--   message while the queue is busy. No nudge: no slot was freed.
--   A retried ack whose first run handed the slot on finds its lease gone
--   (LEASE_LOST); the key handed on is then claimed again when its lease
--   runs out, as after a claim whose reply was lost.
-- (Every command counts: this script runs once per message delivered.)
local k, token = ARGV[1], ARGV[2]
-- How many keys taken from ready a hand-on passes over (dropped, as claim.lua
-- drops them) before it frees the slot instead.
local HAND_ON_SCAN = 16
if not holds_lease(owner, k, token) then
  -- A retry whose first run handed the slot on (its reply lost, or a
  -- NotReplicated): the key it handed, still under the new token that only
  -- this caller knows, is the caller's again. Only on this rare path: one
  -- HGETALL of the keys in flight.
  local new = ARGV[11] or ''
  if new ~= '' then
    local owned = redis.call('HGETALL', owner)
    for i = 1, #owned, 2 do
      if owned[i + 1] == new then
        local nk = owned[i]
        local nhead = redis.call('LINDEX', ARGV[10] .. nk, '0')
        if nhead then
          return {0, nhead, -1, nk, tonumber(redis.call('HGET', attempts, nk) or '0')}
        end
      end
    end
  end
  return LEASE_LOST
end
-- Idempotent: if the head is no longer the acknowledged envelope, this ack
-- already ran (its reply was lost and the caller retried it); popping again
-- would drop a message nobody delivered.
local rest = group_rest(12)
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
    if ARGV[12] then
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
-- Whether an attempt may start now without a claim (not while paused or
-- held: the attempt in flight finished, nothing new starts; not while a
-- backoff is due or a lease ran out). Sets `now`, and q.quiet when one
-- command shows that none of paused, delayed, blocked, paused_keys and
-- attempts exists (a healthy queue): nothing is paused or due, and
-- claimable_head skips its lookups.
local q = {leases = leases, delayed = delayed, blocked = blocked, paused_keys = paused_keys,
  attempts = attempts}
local now
local function may_go_on()
  if held then return false end
  if redis.call('EXISTS', paused, delayed, blocked, paused_keys, attempts) == 0 then
    q.quiet = true
  elseif redis.call('EXISTS', paused) == 1 then
    return false
  end
  now = now_ms()
  local until_now = string.format('%.0f', now) -- (a string: see the counts)
  return (q.quiet
      or #redis.call('ZRANGEBYSCORE', delayed, '-inf', until_now, 'LIMIT', '0', '1') == 0)
    and #redis.call('ZRANGEBYSCORE', leases, '-inf', until_now, 'LIMIT', '0', '1') == 0
end
local function lease_until() return string.format('%.0f', now + tonumber(ARGV[3])) end
local waiting -- how many keys are in ready, once looked up
local prefix = ARGV[10] or ''
if ARGV[4] == '1' then
  waiting = redis.call('LLEN', ready)
  -- (Nor while this conversation is paused: claim.lua parks it.)
  if head and waiting == 0 then
    if may_go_on() and (q.quiet or redis.call('HEXISTS', paused_keys, k) == 0)
        and rate_allows_one(now) then
      redis.call('ZADD', leases, lease_until(), k)
      return {1, head, resumed}
    end
  elseif waiting > 0 and prefix ~= '' and may_go_on() then
    redis.call('ZREM', leases, k)
    redis.call('HDEL', owner, k)
    if head then redis.call('RPUSH', ready, k) end
    local nk, nhead
    for _ = 1, HAND_ON_SCAN do
      nk = redis.call('LPOP', ready)
      if not nk then break end
      nhead = claimable_head(q, prefix, nk)
      if nhead then break end
      nk = nil
    end
    if nk and rate_allows_one(now) then
      redis.call('ZADD', leases, lease_until(), nk)
      redis.call('HSET', owner, nk, ARGV[11])
      local made = q.quiet and 0 or tonumber(redis.call('HGET', attempts, nk) or '0')
      return {head and 1 or 0, nhead, resumed, nk, made}
    end
    -- Nothing to hand on (or the rate limit allows no start): the slot is
    -- freed as below, this key already back in ready.
    if nk then redis.call('LPUSH', ready, nk) end
    waiting = redis.call('LLEN', ready)
    if waiting > 0 or redis.call('ZCARD', delayed) > 0 then nudge(wake) end
    return {head and 1 or 0, false, resumed}
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

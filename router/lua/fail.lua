-- An attempt at the head of a lane failed: back off, dead-letter or block.
-- KEYS: lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, health, failing, suspects, recovered
local lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, health, failing, suspects, recovered =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
-- ARGV: ordering key, token, delay ms, error, outcome: '0' retry after the
--       delay, '1' dead-letter the head, '2' block the key (the head stays);
--       counted: '1' when an attempt was made, '2' when one was made but
--       the failure is the message's own (a sink's permanent failure: not
--       the destination's health), '0' when the worker gave up before
--       trying (the count is already the attempts made);
--       the circuit breaker (docs/destination-health.md): failing keys that
--       open it (0: off), window ms, first probe interval ms, longest probe
--       interval ms, hold ms (a Retry-After: the whole destination waits)
-- Returns LEASE_LOST, else {attempts made so far (the one counter of
-- attempts, with claim's count of expired leases), what changed for the
-- destination: '' nothing, 'down' the breaker opened, 'hold' a Retry-After
-- holds it from now on}.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
local now = now_ms()
-- When the failed message arrived (before the lane changes below).
local arrived = tonumber(redis.call('ZSCORE', heads, k)) or now
redis.call('ZREM', leases, k)
redis.call('HDEL', owner, k)
local made
if ARGV[6] ~= '0' then
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
-- The destination's health: a failed attempt counts (a give-up without one,
-- or the message's own failure, only frees the probe slot it held).
local event = ''
local threshold = tonumber(ARGV[7])
if threshold > 0 then
  local h = redis.call('HMGET', health, 'state', 'probe_key', 'probe_ms')
  if h[1] == 'down' then
    if ARGV[6] == '1' then redis.call('ZADD', suspects, 'NX', now, k) end
    if h[2] == k then
      redis.call('HDEL', health, 'probe_key')
      if ARGV[6] == '1' then
        -- The probe failed: the next one waits twice as long, up to the cap.
        local wait = math.min(tonumber(h[3]) * 2, tonumber(ARGV[10]))
        redis.call('HSET', health, 'probe_ms', wait, 'probe_at', now + wait)
      else
        -- Given up without a try (max_attempts, max_age) or for the
        -- message's own fault: it said nothing about the destination, so
        -- the next probe is due now.
        redis.call('HSET', health, 'probe_at', now)
      end
    end
  elseif ARGV[6] == '1' then
    -- What tells a sick destination from sick conversations (the rule and
    -- its limits: docs/destination-health.md):
    -- - a conversation counts once, at its first failure since its own last
    --   success (ack.lua takes it out of `suspects`): one whose messages
    --   always fail is one failing key for as long as it keeps failing;
    -- - a message that waited through the last outage does not count when it
    --   fails after the recovery (`recovered`): the backlog an outage leaves,
    --   poison conversations included, cannot open it again at once;
    -- - only failures on `threshold` different keys with no success between
    --   them (ack.lua clears `failing`) open it.
    local first = redis.call('ZADD', suspects, 'NX', now, k) == 1
    local back = tonumber(redis.call('GET', recovered) or '0')
    if first and arrived > back then
      redis.call('ZADD', failing, now, k)
    end
    redis.call('ZREMRANGEBYSCORE', failing, '-inf', now - tonumber(ARGV[8]))
    if redis.call('ZCARD', failing) >= threshold then
      local probe = tonumber(ARGV[9])
      local onset = redis.call('ZRANGE', failing, 0, 0, 'WITHSCORES')[2]
      redis.call('HSET', health, 'state', 'down', 'since', now, 'onset', onset,
        'probe_ms', probe, 'probe_at', now + probe, 'error', ARGV[4])
      redis.call('DEL', failing)
      event = 'down'
    end
  end
  local hold = tonumber(ARGV[11])
  local held_until = tonumber(redis.call('HGET', health, 'hold_until')) or 0
  if hold > 0 and ARGV[6] == '1' and now + hold > held_until then
    redis.call('HSET', health, 'hold_until', now + hold)
    -- Reported (and so logged) when a hold begins, not when another
    -- answer of the same kind lengthens it.
    if event == '' and held_until <= now then event = 'hold' end
  end
end
-- Nothing left of the conversation: it leaves `suspects` (kept bounded by
-- the keys with messages); its next message starts afresh.
if redis.call('EXISTS', lane) == 0 then redis.call('ZREM', suspects, k) end
-- Nudge a blocked worker so it recomputes how long it may sleep.
nudge(wake)
return {made, event}

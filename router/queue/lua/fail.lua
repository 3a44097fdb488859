-- An attempt at the head of a lane failed: back off, dead-letter or block.
-- KEYS: lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, health, failing, suspects, breaker, log, logged
local lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, health, failing, suspects, breaker, log, logged =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18]
-- ARGV: ordering key, token, delay ms, error, outcome: '0' retry after the
--       delay, '1' dead-letter the head, '2' block the key (the head stays);
--       counted: '1' when an attempt was made and failed for the
--       destination's reasons (it counts toward the breaker), '3' when the
--       destination answered but blamed the message (a status in
--       circuit_breaker.ignore_statuses: it is up, and never counted), '2'
--       when the message is given up for its own fault (a sink's permanent
--       failure: says nothing about the destination), '0' when the worker
--       gave up before trying (the count is already the attempts made);
--       the circuit breaker (docs/destination-health.md): failing keys that
--       open it (0: off), window ms, first probe interval ms, longest probe
--       interval ms, hold ms (a Retry-After: the whole destination waits),
--       the message id, and its message log entry (JSON; '' or absent:
--       the log is off); a coalesced request (gather.lua): how many
--       messages follow the head in it, then each one's lane entry and
--       message id (each logged; a give-up gives the whole group up)
-- Returns LEASE_LOST, else {attempts made so far (the one counter of
-- attempts, with claim's count of expired leases), what changed for the
-- destination: '' nothing, 'down' the breaker opened, 'up' a probe's answer
-- blamed the message (the destination answers: it is up again), 'hold' a
-- Retry-After holds it from now on, keys resumed when 'up' (else -1)}.
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
-- The destination's health first, while the key is in none of ready,
-- delayed and blocked: a probe answered with the message's fault reopens
-- the destination without resuming this key, which then waits out its own
-- backoff below.
local event = ''
local resumed = -1
local counted = ARGV[6]
local threshold = tonumber(ARGV[7])
if threshold > 0 then
  local h = redis.call('HMGET', health, 'state', 'probe_key', 'probe_ms')
  if h[1] == 'down' then
    if counted == '1' then redis.call('ZADD', suspects, 'NX', now, k) end
    if h[2] == k then redis.call('HDEL', health, 'probe_key') end
    if counted == '3' then
      -- The destination answered (the probe, or an attempt in flight when
      -- it opened), blaming this message: it is up, as after a success.
      -- (Not a faster next probe: each would take the next key at once, a
      -- loop at the speed of the answers while every one blames its
      -- message.)
      resumed = reopen(health, failing, ready, delayed, heads, wake, suspects, breaker, false)
      event = 'up'
    elseif h[2] == k then
      if counted == '1' then
        -- The probe failed: the next one waits twice as long, up to the cap.
        local wait = math.min(tonumber(h[3]) * 2, tonumber(ARGV[10]))
        redis.call('HSET', health, 'probe_ms', wait, 'probe_at', now + wait)
      else
        -- Given up without a try (max_attempts, max_age) or for the
        -- message's own fault (dead-lettered or blocked: it is not tried
        -- again): it said nothing about the destination, so the next probe
        -- is due now.
        redis.call('HSET', health, 'probe_at', now)
      end
    end
  elseif counted == '1' then
    -- What tells a sick destination from sick conversations (the rule and
    -- its limits: docs/destination-health.md). A failure counts when its
    -- message arrived after the last recovery (the backlog an outage leaves,
    -- poison conversations included, cannot open it again at once), and it
    -- is the conversation's first failure since its own last success, or
    -- other conversations are failing now too: a conversation whose
    -- messages always fail never starts a run of failures on its own.
    -- Failures on `threshold` different keys within `window`, with no
    -- success between them (ack.lua clears `failing`), open it.
    local first = redis.call('ZADD', suspects, 'NX', now, k) == 1
    redis.call('ZREMRANGEBYSCORE', failing, '-inf', now - tonumber(ARGV[8]))
    local back = tonumber(redis.call('HGET', breaker, 'recovered') or '0')
    if arrived > back then
      local others = redis.call('ZCARD', failing)
      if redis.call('ZSCORE', failing, k) then others = others - 1 end
      if first or others > 0 then
        if others == 0 then redis.call('HSET', breaker, 'streak', now) end
        redis.call('ZADD', failing, now, k)
      end
    end
    if redis.call('ZCARD', failing) >= threshold then
      local probe = tonumber(ARGV[9])
      local onset = redis.call('HGET', breaker, 'streak') or now
      redis.call('HSET', health, 'state', 'down', 'since', now, 'onset', onset,
        'probe_ms', probe, 'probe_at', now + probe, 'error', ARGV[4])
      redis.call('DEL', failing)
      event = 'down'
    end
  end
  local hold = tonumber(ARGV[11])
  local held_until = tonumber(redis.call('HGET', health, 'hold_until')) or 0
  if hold > 0 and counted == '1' and now + hold > held_until then
    redis.call('HSET', health, 'hold_until', now + hold)
    -- Reported (and so logged) when a hold begins, not when another
    -- answer of the same kind lengthens it.
    if event == '' and held_until <= now then event = 'hold' end
  end
end
if (ARGV[13] or '') ~= '' then
  -- The story first, while the entry is still the lane's head.
  local head = redis.call('LINDEX', lane, 0)
  local state = ({['0'] = 'waiting', ['1'] = 'dead', ['2'] = 'blocked'})[ARGV[5]]
  if head then log_entry(log, logged, ARGV[12], k, head, ARGV[13], state, true) end
  for _, m in ipairs(group_rest(14)) do
    log_entry(log, logged, m[2], k, m[1], ARGV[13], state, true)
  end
end
if ARGV[5] == '1' then
  -- Each letter keeps its envelope and, apart, its sequence number (a
  -- replay puts it back with it). A coalesced request's messages go
  -- together, each a letter.
  -- Only the group's messages still where they were delivered (the same
  -- check as ack.lua's): never one that came in between.
  local rest = group_rest(14)
  local given = 1
  local found = redis.call('LRANGE', lane, 1, #rest)
  for i, m in ipairs(rest) do
    if found[i] ~= m[1] then break end
    given = given + 1
  end
  for _ = 1, given do
    if redis.call('LLEN', lane) == 0 then break end
    dead_letter(lane, dead, attempts, last_error, counts, heads, k, ARGV[4], made, now)
  end
  if ARGV[14] then redis.call('HDEL', attempts, GROUP_MARK .. k) end
  if redis.call('LLEN', lane) > 0 then redis.call('RPUSH', ready, k) end
elseif ARGV[5] == '2' then
  -- The key leaves the scheduling sets until an operator unblocks it.
  redis.call('HSET', last_error, k, ARGV[4])
  redis.call('HSET', blocked, k, cjson.encode({error = ARGV[4], attempts = made, blocked_at = now}))
else
  redis.call('HSET', last_error, k, ARGV[4])
  redis.call('ZADD', delayed, now + tonumber(ARGV[3]), k)
end
-- Nothing left of the conversation: it leaves `suspects` (kept bounded by
-- the keys with messages); its next message starts afresh.
if redis.call('EXISTS', lane) == 0 then redis.call('ZREM', suspects, k) end
-- Nudge a blocked worker so it recomputes how long it may sleep.
nudge(wake)
return {made, event, resumed}

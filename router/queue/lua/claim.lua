-- Claim up to `want` ordering keys whose head message can be attempted now.
-- KEYS: ready, leases, owner, delayed, attempts, wake, blocked, paused, health, throttle, suspects, log, logged, paused_keys
local ready, leases, owner, delayed, attempts, wake, blocked, paused, health, throttle, suspects, log, logged, paused_keys =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11],
  KEYS[12], KEYS[13], KEYS[14]
-- ARGV: lane prefix, lease ms, max in flight (all processes), token, want,
--       breaker ('1': the circuit breaker is on; '0': `health` is ignored),
--       rate limit interval µs ('0' or absent: none), rate limit burst,
--       message log policy ('' or absent: off; _lib.lua's log_trim)
-- Returns {ready left, next deadline ms or -1, now ms, key, head, attempts, ...};
-- ready left is negative while nothing may be claimed: -1 paused by an
-- operator, -2 held by a Retry-After, -3 down (the circuit breaker is open;
-- its one probe, when due, is the only key returned). While the rate limit
-- holds keys back, the next deadline is at the latest when it allows the
-- next start.
local PAUSED, HELD, DOWN = -1, -2, -3
-- How far from the tail of ready a probe is looked for (each a ZSCORE).
local PROBE_SCAN = 20
local now = now_ms()
local lane, lease, cap, token, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
-- Times as command arguments are strings (_lib.lua says why).
local until_now, deadline = string.format('%.0f', now), string.format('%.0f', now + lease)

-- A key just taken from ready: its head message, or nil when it is not to
-- be claimed. A key is in exactly one of ready/leases/delayed/blocked.
-- Should a key ever be in ready twice (a Redis that evicted or lost part of
-- the state), a copy whose key is already leased, waiting or blocked is
-- dropped: never two leases of one key. A conversation paused by an
-- operator is parked (_lib.lua's paused_entry): out of ready, unclaimed,
-- until resume_key.lua.
-- `quiet`: none of delayed, blocked, paused_keys and attempts exists, so
-- no key is in them (looked up once, at the first key: this script never
-- adds to them after that), and their lookups per key are skipped.
local quiet
local function head_of(k)
  if quiet == nil then
    quiet = redis.call('EXISTS', delayed, blocked, paused_keys, attempts) == 0
  end
  if redis.call('ZSCORE', leases, k) then return nil end
  if not quiet and (redis.call('ZSCORE', delayed, k) or redis.call('HEXISTS', blocked, k) == 1) then
    return nil
  end
  local head = redis.call('LINDEX', lane .. k, '0')
  if not head then return nil end
  local entry = not quiet and paused_entry(paused_keys, k)
  if entry then
    mark_parked(paused_keys, k, entry, true)
    return nil
  end
  return head
end
local function is_paused(k) return redis.call('HEXISTS', paused_keys, k) == 1 end

-- While the destination is down, keys whose backoff ended stay in delayed:
-- they would only crowd the front of ready, where the probe is chosen
-- (reopen resumes them all at once).
local down = ARGV[6] == '1' and redis.call('HGET', health, 'state') == 'down'
-- A key whose backoff is due was in line before it failed: it goes to the
-- front too (earliest due first), so busy keys cycling through ready cannot
-- keep pushing it back.
if not down then
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', until_now, 'LIMIT', '0', '100')
  for i = #due, 1, -1 do
    redis.call('ZREM', delayed, due[i])
    redis.call('LPUSH', ready, due[i])
  end
end

-- A lease that ran out means its worker died or stalled: the key goes back to
-- the front of the line (it was first) and the lost try counts as an attempt,
-- so a message that kills its worker is caught by max_attempts too.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', until_now, 'LIMIT', '0', '100')
local logging = (ARGV[9] or '') ~= ''
for _, k in ipairs(expired) do
  redis.call('ZREM', leases, k)
  redis.call('HDEL', owner, k)
  local made = redis.call('HINCRBY', attempts, k, 1)
  redis.call('LPUSH', ready, k)
  local head = logging and redis.call('LINDEX', lane .. k, '0')
  if head then
    -- The attempt nobody finished is in the message's story too.
    -- (Each message of a coalesced request too: gather.lua.)
    for _, entry in ipairs(pinned_group(attempts, lane .. k, k, head) or {head}) do
      local _, envelope = split_entry(entry)
      log_entry(log, logged, envelope_id(envelope), k, entry, cjson.encode({
        attempt = made, outcome = 'failed',
        error = 'the lease ran out: its worker crashed, stalled or lost Redis'}), 'waiting', true)
    end
  end
end
local out = {0, -1, now}
local room = cap - redis.call('ZCARD', leases)
if room > want then room = want end
-- Outbound rate limit: claim no more keys than it allows now; the others
-- stay in ready untouched (no lease, no attempt counted).
local rate_interval, rate_burst = tonumber(ARGV[7] or '0'), tonumber(ARGV[8] or '1')
local rate_tat
if rate_interval > 0 then
  room, rate_tat = throttle_allows(throttle, rate_interval, rate_burst, now, room)
end
local gate = 0 -- or PAUSED, HELD, DOWN: why nothing (or only a probe) is claimed
local wake_at = nil -- when the gate may let claims through again
if redis.call('EXISTS', paused) == 1 then
  gate = PAUSED
elseif ARGV[6] == '1' then
  local h = redis.call('HMGET', health, 'hold_until', 'state', 'probe_at', 'probe_key')
  local hold_until = tonumber(h[1])
  if hold_until and hold_until > now then
    gate, wake_at = HELD, hold_until
  elseif h[2] == 'down' then
    gate, wake_at = DOWN, tonumber(h[3]) or now
    if h[4] and redis.call('ZSCORE', leases, h[4]) then
      -- The probe is still out (its lease renewed past probe_at): its
      -- answer, or its lease running out, decides; the lease deadline
      -- below says when to look.
      wake_at = nil
      room = 0
    elseif wake_at <= now and room > 0 then
      -- One probe, from the conversations that look healthiest: the
      -- newest in ready that has not failed since its last success (a
      -- poison conversation's messages, posted with the failures that
      -- opened the breaker, are older), else the key whose backoff ends
      -- first (the shortest backoff: the fewest failures), else the front
      -- of ready. Each failed probe's key backs off on its own, so probes
      -- rotate. No second probe while it is out: the next one is due when
      -- its lease would run out (fail.lua sets it sooner when the probe
      -- fails; ack.lua reopens on success). Never a paused conversation:
      -- it would only be parked.
      local k = nil
      local tail = redis.call('LRANGE', ready, -PROBE_SCAN, -1)
      for i = #tail, 1, -1 do
        if not redis.call('ZSCORE', suspects, tail[i]) and not is_paused(tail[i]) then
          k = tail[i]
          break
        end
      end
      if k then
        redis.call('LREM', ready, -1, k)
      else
        for _, d in ipairs(redis.call('ZRANGE', delayed, 0, PROBE_SCAN - 1)) do
          if not is_paused(d) then
            k = d
            redis.call('ZREM', delayed, k)
            break
          end
        end
        -- The front of ready, parking the paused keys met on the way.
        for _ = 1, PROBE_SCAN do
          if k then break end
          local c = redis.call('LPOP', ready)
          if not c then break end
          if is_paused(c) then head_of(c) else k = c end
        end
      end
      if k then redis.call('LPUSH', ready, k) end
      if k then
        redis.call('HSET', health, 'probe_at', now + lease, 'probe_key', k)
        wake_at = now + lease
        room = 1
      else
        -- Nothing to probe: a message stored, failed or handed back
        -- nudges the workers (no polling meanwhile).
        wake_at = nil
        room = 0
      end
    else
      -- A probe due without room (the rate limit, or leases from before
      -- it went down): the lease or rate deadline below says when to look.
      if wake_at <= now then wake_at = nil end
      room = 0
    end
  end
  if hold_until and hold_until <= now then redis.call('HDEL', health, 'hold_until') end
elseif redis.call('EXISTS', health) == 1 then
  -- The breaker was turned off (routes.yaml) while the destination was
  -- down or held: that state means nothing now, and would keep ack.lua from
  -- keeping busy keys.
  redis.call('DEL', health)
end
if gate == PAUSED or gate == HELD then room = 0 end
-- The keys claimed get their leases and owner in one ZADD and one HSET
-- (per 200 keys), not two commands each: `taken` stands for their leases
-- meanwhile (a key in ready twice is claimed once). The keys come from
-- ready as many at a time as there is room; one not claimed (head_of) is
-- dropped from ready as before, and the room left is popped for next.
local taken, new_leases, new_owners = {}, {}, {}
local function write_claims()
  if #new_leases == 0 then return end
  redis.call('ZADD', leases, unpack(new_leases))
  redis.call('HSET', owner, unpack(new_owners))
  new_leases, new_owners = {}, {}
end
while room > 0 do
  local popped = redis.call('LPOP', ready, string.format('%.0f', room))
  if not popped then break end
  for _, k in ipairs(popped) do
    local head = not taken[k] and head_of(k)
    if head then
      taken[k] = true
      new_leases[#new_leases + 1] = deadline
      new_leases[#new_leases + 1] = k
      new_owners[#new_owners + 1] = k
      new_owners[#new_owners + 1] = token
      if #new_owners == 400 then write_claims() end
      out[#out + 1] = k
      out[#out + 1] = head
      out[#out + 1] = quiet and 0 or tonumber(redis.call('HGET', attempts, k) or '0')
      room = room - 1
    end
  end
end
write_claims()
out[1] = redis.call('LLEN', ready)
if gate ~= 0 then out[1] = gate end
-- When the rate limit allows the next start (-1: no limit); until then
-- nobody can start anything, so no nudge is passed on.
local rate_next = -1
if rate_interval > 0 then
  rate_next = throttle_take(throttle, rate_interval, rate_burst, now, rate_tat, (#out - 3) / 3)
end
local throttled = rate_next > now
-- Keys are still waiting after this claim: pass the nudge on to another
-- worker (here, not in a second round trip from the caller).
if out[1] > 0 and #out > 3 and not throttled then nudge(wake) end
-- When to look again even if nobody nudges: the next backoff or lease deadline.
local nxt = -1
-- (Not a backoff while down: only the probe's time matters then.)
local d = (not down) and redis.call('ZRANGE', delayed, '0', '0', 'WITHSCORES') or {}
if d[2] then nxt = tonumber(d[2]) end
local l = redis.call('ZRANGE', leases, '0', '0', 'WITHSCORES')
if l[2] and (nxt < 0 or tonumber(l[2]) < nxt) then nxt = tonumber(l[2]) end
if wake_at and (nxt < 0 or wake_at < nxt) then nxt = wake_at end
if throttled and (out[1] > 0 or gate == DOWN) and (nxt < 0 or rate_next < nxt) then
  nxt = rate_next
end
out[2] = nxt
return out

-- Skip the head message of one conversation (`router skip DEST KEY`): it
-- goes to the dead letters as fail.lua gives one up, and the key's next
-- message goes next. Wherever the key is: ready, waiting out a backoff,
-- blocked, parked (paused), or in flight. An attempt in flight is fenced
-- out: its lease and owner go, so its ack or fail answers LEASE_LOST and
-- changes nothing (the destination may still receive that attempt).
-- KEYS: lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, paused_keys, suspects, health, log, logged
local lane, ready, leases, owner, delayed, attempts, last_error, wake, dead, blocked, counts, heads, paused_keys, suspects, health, log, logged =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17]
-- ARGV: ordering key, the dead letter's error (its head's last error, if
--       any, is added in parentheses)
-- Returns 0 when the conversation has no message, else {the skipped
-- envelope, its sequence number (-1: none), where the key was ('ready',
-- 'in flight', 'waiting', 'blocked', 'parked'), messages left}.
local k = ARGV[1]
if redis.call('LLEN', lane) == 0 then return 0 end
local now = now_ms()
local entry = paused_entry(paused_keys, k)
local was
if redis.call('ZSCORE', leases, k) then
  -- Leased (live, or run out with its worker): fenced out.
  was = 'in flight'
  redis.call('ZREM', leases, k)
  redis.call('HDEL', owner, k)
  -- The probe of a destination that is down: the next one is due now.
  if redis.call('HGET', health, 'probe_key') == k then
    redis.call('HSET', health, 'probe_at', now)
    redis.call('HDEL', health, 'probe_key')
  end
elseif redis.call('ZREM', delayed, k) == 1 then
  was = 'waiting'
elseif redis.call('HDEL', blocked, k) == 1 then
  was = 'blocked'
elseif entry and entry.parked then
  was = 'parked'
else
  was = 'ready' -- in none of the others: in ready (no O(n) LPOS)
end
local made = tonumber(redis.call('HGET', attempts, k) or '0')
local err = ARGV[2]
local last = redis.call('HGET', last_error, k)
if last then err = err .. ' (last error: ' .. last .. ')' end
-- The story ends with the skip (when the message has one: the log is on).
local head = redis.call('LINDEX', lane, 0)
local _, head_envelope = split_entry(head)
local id = envelope_id(head_envelope)
if id and redis.call('HEXISTS', log, id) == 1 then
  log_entry(log, logged, id, k, head, cjson.encode({
    attempt = made, outcome = 'skipped', started_at = now, error = err}), 'dead', false)
end
local envelope, seq = dead_letter(lane, dead, attempts, last_error, counts, heads, k, err, made, now)
local left = redis.call('LLEN', lane)
if left == 0 then
  -- An empty lane's key is in none of the sets, nor parked (still paused).
  redis.call('ZREM', suspects, k)
  if was == 'ready' then redis.call('LREM', ready, 0, k) end
  if was == 'parked' then mark_parked(paused_keys, k, entry, false) end
elseif was ~= 'ready' and was ~= 'parked' then
  -- Its next message is in line now (a paused one parked at once).
  if entry then
    mark_parked(paused_keys, k, entry, true)
  else
    redis.call('RPUSH', ready, k)
    nudge(wake)
  end
end
return {envelope, seq or -1, was, left}

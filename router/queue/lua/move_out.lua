-- Remove messages of one ordering key from this destination: the second
-- step of a move into another destination (router/queue/moving.py; the first
-- copied them there, move_in.lua), or an orphan's queue purged.
-- KEYS: dead, lane, ready, leases, owner, delayed, attempts, last_error, blocked, counts, heads, log, logged, paused_keys
local dead, lane, ready, leases, owner, delayed, attempts, last_error, blocked, counts, heads, log, logged, paused_keys =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13], KEYS[14]
-- ARGV: 'dead' (dead letters) or 'lane' (queued messages), the ordering key,
--       the `counts` field that records them ('moved' or 'purged'), then
--       the entries, oldest first: exact dead-list elements, or the lane's
--       envelopes from its head
-- Returns how many were removed; -1 (LEASE_LOST's value: someone holds the
-- key) when its lease is live, changing nothing: a head being delivered is
-- never taken away from under its worker.
-- A message removed leaves the message log here too (its story goes on
-- at the destination it moved to, from its first attempt there).
--
-- What is there is counted first and `counts` written before anything
-- else: a write refused here (a full Redis, a key of the wrong type) leaves
-- the messages where they were, and the move, run again, completes.
local mode, k, field = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
if mode == 'dead' then
  local there = 0
  for a = 4, #ARGV do
    if redis.call('LPOS', dead, ARGV[a]) then there = there + 1 end
  end
  if there == 0 then return 0 end
  redis.call('HINCRBY', counts, field, there)
  local removed = 0
  for a = 4, #ARGV do
    if redis.call('LREM', dead, 1, ARGV[a]) == 1 then
      removed = removed + 1
      local id = envelope_id(cjson.decode(ARGV[a]).envelope)
      if id then log_forget(log, logged, id) end
    end
  end
  return removed
end

local lease = tonumber(redis.call('ZSCORE', leases, k))
if lease and lease > now then return LEASE_LOST end
-- The given envelopes are the lane's first ones, in order; whatever no
-- longer is (removed meanwhile) ends the step.
local head = redis.call('LRANGE', lane, 0, #ARGV - 4)
local n = 0
while n < #head and head[n + 1] == ARGV[n + 4] do n = n + 1 end
if n == 0 then return 0 end
redis.call('HINCRBY', counts, field, n)
redis.call('HINCRBY', counts, 'messages', -n)
redis.call('LPOP', lane, n)
for a = 4, n + 3 do
  local _, envelope = split_entry(ARGV[a])
  local id = envelope_id(envelope)
  if id then log_forget(log, logged, id) end
end
-- A new head (or none): a fresh attempt count, as after an ack (and no
-- coalesced group pinned: gather.lua).
redis.call('HDEL', attempts, k, GROUP_MARK .. k)
redis.call('HDEL', last_error, k)
track_head(heads, lane, k)
-- A lease that ran out: its worker died or stalled, and its ack is fenced
-- out from now on (an ack also checks the head it delivered).
if lease then
  redis.call('ZREM', leases, k)
  redis.call('HDEL', owner, k)
end
if redis.call('LLEN', lane) == 0 then
  -- An empty lane's key is in none of ready/leases/delayed/blocked, and
  -- not parked (it stays paused: what arrives for it waits).
  redis.call('LREM', ready, 0, k)
  redis.call('ZREM', delayed, k)
  redis.call('HDEL', blocked, k)
  local entry = paused_entry(paused_keys, k)
  if entry and entry.parked then mark_parked(paused_keys, k, entry, false) end
elseif lease then
  -- (A paused key is parked by the claim that takes it.)
  redis.call('RPUSH', ready, k)
end
return n

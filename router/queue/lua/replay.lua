-- Put dead-lettered messages of one ordering key back in its lane, where
-- they arrived.
-- KEYS: dead, lane, ready, wake, leases, attempts, last_error, counts, heads, log
local dead, lane, ready, wake, leases, attempts, last_error, counts, heads, log =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
-- ARGV: ordering key, then per letter, oldest first: the dead entry (exact
--       list element), its lane entry (its envelope behind the sequence
--       number it was stored with, if any: a replayed letter keeps it)
-- Returns how many were replayed (an entry no longer in the dead list is
-- skipped: replayed or purged meanwhile).
--
-- Where a letter goes: every message of the lane that is not a replayed
-- letter arrived after it (it was at the head when it died), so it goes
-- behind the replayed letters that arrived no later than it and in front
-- of everything else, never in front of a head being attempted. Replayed
-- envelopes carry a mark ("rp") so they can be told apart: a message id
-- may share its millisecond with the next. One call per key, oldest first,
-- with the lane order kept across calls too (a letter replayed earlier and
-- not yet delivered stays first). Walks the lane from the head to that
-- place: not a hot path.
local MARK = '{"rp":1,'
local k = ARGV[1]
local replayed = 0
for a = 2, #ARGV, 2 do
  if redis.call('LREM', dead, 1, ARGV[a]) == 1 then
    local prefix, envelope = split_entry(ARGV[a + 1])
    if string.sub(envelope, 1, #MARK) ~= MARK then
      envelope = MARK .. string.sub(envelope, 2)
    end
    envelope = prefix .. envelope -- the lane entry
    local arrived = arrival_ms(envelope)
    local from = 0
    if redis.call('ZSCORE', leases, k) then from = 1 end
    -- Never inside a coalesced request formed already (gather.lua's pin):
    -- each retry must send exactly its messages.
    local first = redis.call('LINDEX', lane, 0)
    local pinned = first and pinned_group(attempts, lane, k, first)
    if pinned and #pinned > from then from = #pinned end
    local len = redis.call('LLEN', lane)
    local place, pivot = nil, nil
    while place == nil and from < len do
      local page = redis.call('LRANGE', lane, from, from + 99)
      for i, other in ipairs(page) do
        local _, other_envelope = split_entry(other)
        if string.sub(other_envelope, 1, #MARK) ~= MARK or arrival_ms(other) > arrived then
          place, pivot = from + i - 1, other
          break
        end
      end
      from = from + #page
    end
    if place == nil then
      redis.call('RPUSH', lane, envelope)
    elseif place == 0 then
      redis.call('LPUSH', lane, envelope)
    else
      redis.call('LINSERT', lane, 'BEFORE', pivot, envelope)
    end
    if len == 0 then
      redis.call('RPUSH', ready, k)
      nudge(wake)
    end
    if len == 0 or place == 0 then
      -- The new head: a fresh attempt count (the old one was the old head's).
      redis.call('HDEL', attempts, k)
      redis.call('HDEL', last_error, k)
      track_head(heads, lane, k)
    end
    redis.call('HINCRBY', counts, 'messages', 1)
    -- Its story goes on: it waits again (its next attempt is logged as usual).
    local id = envelope_id(envelope)
    if id then log_state(log, id, 'waiting') end
    replayed = replayed + 1
  end
end
return replayed

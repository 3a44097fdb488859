-- Put a dead-lettered message back at the head of its key's lane.
-- KEYS: dead, lane, ready, wake, leases, attempts, last_error, counts, heads
local dead, lane, ready, wake, leases, attempts, last_error, counts, heads =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
-- ARGV: the dead entry (exact list element), ordering key, envelope
-- Returns 1, or 0 when the entry is no longer in the dead list.
if redis.call('LREM', dead, 1, ARGV[1]) == 0 then return 0 end
local k = ARGV[2]
redis.call('HINCRBY', counts, 'messages', 1)
local was_empty = redis.call('LLEN', lane) == 0
if was_empty or redis.call('ZSCORE', leases, k) == false then
  -- The head is not being attempted right now: the replayed message goes
  -- first, with a fresh attempt count (the old one was the old head's).
  redis.call('LPUSH', lane, ARGV[3])
  redis.call('HDEL', attempts, k)
  redis.call('HDEL', last_error, k)
  track_head(heads, lane, k)
else
  -- The head is in flight: the replayed message goes right behind it.
  local head = redis.call('LINDEX', lane, 0)
  redis.call('LINSERT', lane, 'AFTER', head, ARGV[3])
end
if was_empty then
  redis.call('RPUSH', ready, k)
  nudge(wake)
end
return 1

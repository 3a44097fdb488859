-- Put a dead-lettered message back at the head of its key's lane.
-- KEYS: dead, lane, ready, wake, leases, attempts, lasterr
-- ARGV: the dead entry (exact list element), ordering key, envelope
-- Returns 1, or 0 when the entry is no longer in the dead list.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local k = ARGV[2]
local was_empty = redis.call('LLEN', KEYS[2]) == 0
if was_empty or redis.call('ZSCORE', KEYS[5], k) == false then
  -- The head is not being attempted right now: the replayed message goes
  -- first, with a fresh attempt count (the old one was the old head's).
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[6], k)
  redis.call('HDEL', KEYS[7], k)
else
  -- The head is in flight: the replayed message goes right behind it.
  local head = redis.call('LINDEX', KEYS[2], 0)
  redis.call('LINSERT', KEYS[2], 'AFTER', head, ARGV[3])
end
if was_empty then
  redis.call('RPUSH', KEYS[3], k)
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 0)
end
return 1

-- Build `counts` and `heads` from the lanes themselves, once, for a queue
-- stored by a version that did not keep them (their absence is the sign).
-- KEYS: counts, heads, ready, leases, delayed, blocked
local counts, heads, ready, leases, delayed, blocked =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
-- ARGV: lane prefix
-- Returns the messages counted, or -2 when the queue already has its counts.
-- A key with messages is in exactly one of ready/leases/delayed/blocked, so
-- those four name every lane: O(lanes) once, no scan of the keyspace. The
-- scripts keep both up to date from then on.
if redis.call('HEXISTS', counts, 'messages') == 1 then return -2 end
local prefix = ARGV[1]
local seen = {}
local total = 0
local function count(k)
  if seen[k] then return end -- a key in ready twice (see claim.lua) counts once
  seen[k] = true
  local lane = prefix .. k
  total = total + redis.call('LLEN', lane)
  track_head(heads, lane, k)
end
for _, k in ipairs(redis.call('LRANGE', ready, 0, -1)) do count(k) end
for _, k in ipairs(redis.call('ZRANGE', leases, 0, -1)) do count(k) end
for _, k in ipairs(redis.call('ZRANGE', delayed, 0, -1)) do count(k) end
for _, k in ipairs(redis.call('HKEYS', blocked)) do count(k) end
redis.call('HSET', counts, 'messages', total)
return total

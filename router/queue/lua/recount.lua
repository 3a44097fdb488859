-- Count a destination shard's messages from its lanes and rebuild `heads`:
-- once for a queue stored by a version that did not keep them (no
-- `counted` mark yet), or when asked (`router recount`, after the last
-- process of such a version stopped writing).
-- KEYS: counts, heads, ready, leases, delayed, blocked, paused_keys
local counts, heads, ready, leases, delayed, blocked, paused_keys =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- ARGV: lane prefix, '1' to count even when already counted
-- Returns the messages counted, or -2 when the shard was counted already.
-- A key with messages is in exactly one of ready/leases/delayed/blocked, or
-- parked (a paused conversation: _lib.lua's paused_entry), so those four
-- and paused_keys name every lane: O(lanes) in one step (about 1.5 s per 200,000
-- conversations waiting), no scan of the keyspace. The scripts keep both
-- up to date from then on. The mark is this script's own: enqueue creating
-- `messages` first does not stand for a count.
if ARGV[2] ~= '1' and redis.call('HEXISTS', counts, 'counted') == 1 then return -2 end
local prefix = ARGV[1]
local seen = {}
local total = 0
redis.call('DEL', heads)
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
-- Counted only: a parked key stays out of ready until it is resumed.
for _, k in ipairs(redis.call('HKEYS', paused_keys)) do count(k) end
redis.call('HSET', counts, 'messages', total, 'counted', now_ms())
return total

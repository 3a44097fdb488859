-- Store one message in the lanes of all destinations of a route, atomically.
-- KEYS: 4 per destination: lane, ready, wake, seen
-- ARGV: envelope, message id, dedup id ('' = none), dedup ttl seconds,
--       then one ordering-key value per destination
-- Returns {number of destinations written, id}: when every destination had
-- already seen the dedup id, 0 and the id stored the first time.
local envelope, id, dedup, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 4
local fresh = {}
local original = id
for i = 0, n - 1 do
  local seen = false
  if dedup ~= '' then
    local prev = redis.call('GET', KEYS[i * 4 + 4])
    if prev then
      seen = true
      original = prev
    end
  end
  if not seen then fresh[#fresh + 1] = i end
end
-- A partly seen id (a fan-out half done on a Cluster) completes the missing
-- destinations under the id that was stored first.
if #fresh < n then id = original end
for _, i in ipairs(fresh) do
  local base = i * 4
  if dedup ~= '' then redis.call('SET', KEYS[base + 4], id, 'EX', ttl) end
  -- A lane that was empty held a key in none of ready/leases/delayed.
  if redis.call('RPUSH', KEYS[base + 1], envelope) == 1 then
    redis.call('RPUSH', KEYS[base + 2], ARGV[5 + i])
    redis.call('LPUSH', KEYS[base + 3], '1')
    redis.call('LTRIM', KEYS[base + 3], 0, 0)
  end
end
return {#fresh, id}

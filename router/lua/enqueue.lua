-- Store one message in the lanes of all destinations of a route, atomically.
-- KEYS, per destination: lane, ready, wake, seen, counts, heads
local LANE, READY, WAKE, SEEN, COUNTS, HEADS = 1, 2, 3, 4, 5, 6 -- places in each group
local GROUP = 6
-- ARGV: envelope, message id, dedup id ('' = none), dedup ttl seconds,
--       '1' to make a duplicate write something (see below),
--       then one ordering-key value per destination
-- Returns {number of destinations written, id}: when every destination had
-- already seen the dedup id, 0 and the id stored the first time.
local envelope, id, dedup, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = #KEYS / GROUP
local arrival = arrival_ms(envelope)
local fresh = {}
local original = id
local first_marker = nil -- the first destination's marker, as it was
for i = 0, n - 1 do
  local seen = false
  if dedup ~= '' then
    local prev = redis.call('GET', KEYS[i * GROUP + SEEN])
    if prev then
      seen = true
      original = prev
      if i == 0 then first_marker = prev end
    end
  end
  if not seen then fresh[#fresh + 1] = i end
end
-- A partly seen id (a fan-out half done on a Cluster) completes the missing
-- destinations under the id that was stored first.
if #fresh < n then id = original end
-- A duplicate changes nothing, so a WAIT after it would not cover the
-- original write, which may not have reached a replica yet (its first
-- request timed out waiting): rewriting a marker as it is puts this
-- connection's replication offset past the original. (ROUTER_REDIS_WAIT
-- only; pcall: on a full Redis the duplicate is still answered as one.)
if #fresh == 0 and ARGV[5] == '1' then
  redis.pcall('SET', KEYS[SEEN], first_marker, 'KEEPTTL')
end
for _, i in ipairs(fresh) do
  local base = i * GROUP
  if dedup ~= '' then redis.call('SET', KEYS[base + SEEN], id, 'EX', ttl) end
  -- A lane that was empty held a key in none of ready/leases/delayed.
  redis.call('HINCRBY', KEYS[base + COUNTS], 'messages', 1)
  if redis.call('RPUSH', KEYS[base + LANE], envelope) == 1 then
    redis.call('RPUSH', KEYS[base + READY], ARGV[6 + i])
    redis.call('ZADD', KEYS[base + HEADS], arrival, ARGV[6 + i])
    nudge(KEYS[base + WAKE])
  end
end
return {#fresh, id}

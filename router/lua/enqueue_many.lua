-- Store several messages, each in the lanes of its own destinations, in one
-- atomic step: every message of one webhook request, or none.
-- KEYS, per destination: lane, ready, wake, seen, counts, heads
local LANE, READY, WAKE, SEEN, COUNTS, HEADS = 1, 2, 3, 4, 5, 6 -- places in each group
local GROUP = 6
-- ARGV: dedup ttl seconds, '1' to make a duplicate write something (as in
--       enqueue.lua), then per message: envelope, message id, dedup id
--       ('' = none), its number of destinations n, n ordering-key values.
--       The KEYS groups follow the messages' destinations in that order.
-- Returns, per message, {number of destinations written, id}, flattened.
-- Each message is enqueue.lua's step: a dedup id seen by every destination
-- stores nothing (0 and the id stored first), one seen by some completes
-- the others under the id stored first (a Cluster fan-out half done).
-- Messages are appended in their order, so a key's lane gets them as sent.
local ttl, replicate = tonumber(ARGV[1]), ARGV[2]
local out = {}
local a = 3 -- next ARGV of the current message
local g = 0 -- KEYS groups used so far
while a <= #ARGV do
  local envelope, id, dedup, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local arrival = arrival_ms(envelope)
  local fresh = {}
  local original = id
  local first_marker = nil
  for i = 0, n - 1 do
    local seen = false
    if dedup ~= '' then
      local prev = redis.call('GET', KEYS[(g + i) * GROUP + SEEN])
      if prev then
        seen = true
        original = prev
        if i == 0 then first_marker = prev end
      end
    end
    if not seen then fresh[#fresh + 1] = i end
  end
  if #fresh < n then id = original end
  if #fresh == 0 and replicate == '1' and n > 0 then
    redis.pcall('SET', KEYS[g * GROUP + SEEN], first_marker, 'KEEPTTL')
  end
  for _, i in ipairs(fresh) do
    local base = (g + i) * GROUP
    local key = ARGV[a + 4 + i]
    if dedup ~= '' then redis.call('SET', KEYS[base + SEEN], id, 'EX', ttl) end
    redis.call('HINCRBY', KEYS[base + COUNTS], 'messages', 1)
    if redis.call('RPUSH', KEYS[base + LANE], envelope) == 1 then
      redis.call('RPUSH', KEYS[base + READY], key)
      redis.call('ZADD', KEYS[base + HEADS], arrival, key)
      nudge(KEYS[base + WAKE])
    end
  end
  out[#out + 1] = #fresh
  out[#out + 1] = id
  g = g + n
  a = a + 4 + n
end
return out

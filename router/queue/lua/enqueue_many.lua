-- Store several messages, each in the lanes of its own destinations, in one
-- atomic step: every message of one webhook request, or none.
-- KEYS, per destination: lane, ready, wake, seen, counts, heads, seq, log, logged
local LANE, READY, WAKE, SEEN, COUNTS, HEADS, SEQ, LOG, LOGGED = 1, 2, 3, 4, 5, 6, 7, 8, 9 -- places in each group
local GROUP = 9
-- ARGV: dedup ttl seconds, '1' to make a duplicate write something (as in
--       enqueue.lua), then per message: envelope, message id, dedup id
--       ('' = none), its number of destinations n, then per destination
--       its ordering-key value and message log policy (as in enqueue.lua).
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
  local n = tonumber(ARGV[a + 3])
  local written, id = store_message(g, n, ARGV[a], ARGV[a + 1], ARGV[a + 2], ttl, replicate, a + 4)
  out[#out + 1] = written
  out[#out + 1] = id
  g = g + n
  a = a + 4 + 2 * n
end
return out

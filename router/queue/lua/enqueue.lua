-- Store one message in the lanes of all destinations of a route, atomically.
-- KEYS, per destination: lane, ready, wake, seen, counts, heads, seq, log, logged
local LANE, READY, WAKE, SEEN, COUNTS, HEADS, SEQ, LOG, LOGGED = 1, 2, 3, 4, 5, 6, 7, 8, 9 -- places in each group
local GROUP = 9
-- ARGV: envelope, message id, dedup id ('' = none), dedup ttl seconds,
--       '1' to make a duplicate write something (store_message in _lib.lua),
--       then per destination: its ordering-key value and its message log
--       policy ('' off, else '<max messages> <max age ms>': _lib.lua's log_trim)
-- Returns {number of destinations written, id}: when every destination had
-- already seen the dedup id, 0 and the id stored the first time.
local written, stored = store_message(
  0, #KEYS / GROUP, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], 6)
return {written, stored}

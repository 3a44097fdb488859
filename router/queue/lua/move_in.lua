-- Copy messages of one ordering key, moved from another destination
-- (router/queue/moving.py), onto the tail of this destination's lane for that key,
-- in the order given: the first step of a move. Each is copied once per move:
-- `moved` remembers <move token>:<message id> until the move has removed the
-- message from its source, so a move run again after a crash between the two
-- steps (they are in different Cluster slots) skips what it already copied.
-- Each takes the next sequence number of the key from this destination's
-- `seq`, in the order given (a number from the source means nothing here).
-- KEYS: lane, ready, wake, counts, heads, moved, seq
local lane, ready, wake, counts, heads, moved, seq =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- ARGV: ordering key, move token, then per message: its id, its envelope
--       (or its source's lane entry)
-- Returns how many were copied now (the others were copied by an earlier try).
--
-- Markers are read first and written last (as keep_unroutable.lua): a write
-- refused halfway must never leave a marker for a message not copied, which
-- the next try would skip and the source step would then delete.
local k, token = ARGV[1], ARGV[2]
local fresh = {}
for a = 3, #ARGV, 2 do
  if redis.call('HEXISTS', moved, token .. ':' .. ARGV[a]) == 0 then fresh[#fresh + 1] = a end
end
for _, a in ipairs(fresh) do
  local _, envelope = split_entry(ARGV[a + 1])
  append_message(lane, ready, wake, counts, heads, k, numbered(seq, k, envelope))
end
for _, a in ipairs(fresh) do
  redis.call('HSET', moved, token .. ':' .. ARGV[a], '1')
end
return #fresh

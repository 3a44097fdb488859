-- Make keys waiting out a backoff due now (`router retry`): after a fix on
-- the destination's side nobody should wait out a long backoff.
-- KEYS: delayed, ready, wake
local delayed, ready, wake = KEYS[1], KEYS[2], KEYS[3]
-- ARGV: most keys to move when none are named (the caller repeats until
--       fewer move: a long delayed set is moved in bounded steps),
--       then the ordering keys to move; none = the earliest due
-- Returns how many keys were made due. Their attempt counts stay: a retry
-- now is the next attempt, and max_attempts still ends a hopeless message.
local keys = {}
for i = 2, #ARGV do keys[#keys + 1] = ARGV[i] end
if #keys == 0 then keys = redis.call('ZRANGE', delayed, 0, tonumber(ARGV[1]) - 1) end
local moved = 0
-- Backwards, so the earliest due ends up first (as claim.lua moves them).
for i = #keys, 1, -1 do
  local k = keys[i]
  -- A key in delayed is in none of ready/leases/blocked: moving it to the
  -- front of ready (it was in line before it failed) keeps that true.
  if redis.call('ZREM', delayed, k) == 1 then
    redis.call('LPUSH', ready, k)
    moved = moved + 1
  end
end
if moved > 0 then nudge(wake) end
return moved

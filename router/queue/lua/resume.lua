-- Resume a paused destination shard: its workers may claim again.
-- KEYS: paused, wake
local paused, wake = KEYS[1], KEYS[2]
-- Returns 1 when it was paused, else 0.
if redis.call('DEL', paused) == 0 then return 0 end
-- Workers waiting out the pause sleep in BLPOP: wake one; its claim passes
-- the nudge on while keys are ready.
nudge(wake)
return 1

-- An operator says the destination is up (`router retry`, the dashboard's
-- retry): clear the circuit breaker and any Retry-After hold, and resume
-- every waiting conversation now, oldest first.
-- KEYS: health, failing, ready, delayed, heads, wake
local health, failing, ready, delayed, heads, wake =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
-- Returns how many keys resumed, or -1 when the destination was neither
-- down nor held (nothing changed).
if redis.call('EXISTS', health) == 0 then return -1 end
redis.call('DEL', health)
return reopen(health, failing, ready, delayed, heads, wake)

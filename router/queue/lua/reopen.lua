-- An operator says the destination is up (`router retry`, the dashboard's
-- retry): clear the circuit breaker and any Retry-After hold, and resume
-- every waiting conversation now, oldest first.
-- KEYS: health, failing, ready, delayed, heads, wake, suspects, breaker
local health, failing, ready, delayed, heads, wake, suspects, breaker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
-- Returns how many keys resumed, or -1 when the destination was neither
-- down nor held (nothing changed).
if redis.call('EXISTS', health) == 0 then return -1 end
redis.call('DEL', health)
-- Everyone: the operator says go now, so conversations that were failing on
-- their own before the outage try again too.
return reopen(health, failing, ready, delayed, heads, wake, suspects, breaker, true)

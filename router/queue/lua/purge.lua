-- Delete every dead letter of a destination shard (`router dead purge`
-- without a count), in one step: nothing is read back to the caller.
-- KEYS: dead
local dead = KEYS[1]
-- Returns how many there were.
local n = redis.call('LLEN', dead)
redis.call('UNLINK', dead)
return n

-- Count one request of a sender in the current fixed window.
-- KEYS: counter
local counter = KEYS[1]
-- ARGV: window ms
-- Returns {requests in this window, ms left in it}.
local n = redis.call('INCR', counter)
if n == 1 then redis.call('PEXPIRE', counter, ARGV[1]) end
return {n, redis.call('PTTL', counter)}

-- Shared by every script: router/scripts.py prepends this file when it loads
-- a script (as BullMQ's `--- @include` does), so each helper is written once.
--
-- Return codes: a script that changes a claimed key first checks that the
-- caller still holds its lease (the fencing token in `owner`), and returns
-- LEASE_LOST (-1) when it does not, changing nothing. Otherwise it returns 1
-- (done), 0 (nothing to do), or the data its header describes.
local LEASE_LOST = -1

-- Milliseconds on the Redis server's clock, so that instances with skewed
-- clocks agree on leases and backoffs.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Wake one worker blocked in BLPOP on `wake`; the list never holds more
-- than one nudge.
local function nudge(wake)
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end

-- True when `token` is the fencing token of the claim of `key`.
local function holds_lease(owner, key, token)
  return redis.call('HGET', owner, key) == token
end


-- Arrival time (ms) of a stored envelope: the router encodes it as
-- {"id":"...","ts":<ms>,...}, and an id cannot hold an unescaped quote, so
-- the first ,"ts": is the envelope's own (no JSON decoding of the body,
-- and the match ends a few bytes in). Anything else counts as arriving now.
local function arrival_ms(envelope)
  return tonumber(string.match(envelope, ',"ts":(%d+)')) or now_ms()
end

-- Keep `heads` (ordering key -> arrival of its head message) in step with a
-- lane whose head changed: the oldest waiting message is then one ZRANGE.
local function track_head(heads, lane, k)
  local head = redis.call('LINDEX', lane, 0)
  if head then
    redis.call('ZADD', heads, arrival_ms(head), k)
  else
    redis.call('ZREM', heads, k)
  end
end

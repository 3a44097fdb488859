-- Claim up to `want` ordering keys whose head message can be attempted now.
-- KEYS: ready, leases, owner, delayed, attempts, wake, blocked
-- ARGV: lane prefix, lease ms, max in flight (all processes), token, want
-- Returns {ready left, next deadline ms or -1, now ms, key, head, attempts, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lane, lease, cap, token, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])

-- A key whose backoff is due was in line before it failed: it goes to the
-- front too (earliest due first), so busy keys cycling through ready cannot
-- keep pushing it back.
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
for i = #due, 1, -1 do
  redis.call('ZREM', KEYS[4], due[i])
  redis.call('LPUSH', KEYS[1], due[i])
end

-- A lease that ran out means its worker died or stalled: the key goes back to
-- the front of the line (it was first) and the lost try counts as an attempt,
-- so a message that kills its worker is caught by max_attempts too.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, k in ipairs(expired) do
  redis.call('ZREM', KEYS[2], k)
  redis.call('HDEL', KEYS[3], k)
  redis.call('HINCRBY', KEYS[5], k, 1)
  redis.call('LPUSH', KEYS[1], k)
end
local out = {0, -1, now}
local room = cap - redis.call('ZCARD', KEYS[2])
if room > want then room = want end
while room > 0 do
  local k = redis.call('LPOP', KEYS[1])
  if not k then break end
  -- A key is in exactly one of ready/leases/delayed/blocked. Should a key
  -- ever be in ready twice (a Redis that evicted or lost part of the
  -- state), a copy whose key is already leased, waiting or blocked is
  -- dropped: never two leases of one key.
  local elsewhere = redis.call('ZSCORE', KEYS[2], k) or redis.call('ZSCORE', KEYS[4], k)
    or redis.call('HEXISTS', KEYS[7], k) == 1
  local head = (not elsewhere) and redis.call('LINDEX', lane .. k, 0)
  if head then
    redis.call('ZADD', KEYS[2], now + lease, k)
    redis.call('HSET', KEYS[3], k, token)
    out[#out + 1] = k
    out[#out + 1] = head
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[5], k) or '0')
    room = room - 1
  end
end
out[1] = redis.call('LLEN', KEYS[1])
if out[1] > 0 and #out > 3 then
  -- Keys are still waiting after this claim: pass the nudge on to another
  -- worker (here, not in a second round trip from the caller).
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 0)
end
-- When to look again even if nobody nudges: the next backoff or lease deadline.
local nxt = -1
local d = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if d[2] then nxt = tonumber(d[2]) end
local l = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if l[2] and (nxt < 0 or tonumber(l[2]) < nxt) then nxt = tonumber(l[2]) end
out[2] = nxt
return out

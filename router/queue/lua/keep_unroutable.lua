-- Keep the items of one request that were answered 200 but could not be
-- routed (router/queue/unroutable.py), each once, in a list with a cap.
-- KEYS: unroutable, trimmed
local unroutable, trimmed = KEYS[1], KEYS[2]
-- Then one seen marker per item, at the item's place in ARGV.
local markers = KEYS
-- ARGV: cap, marker ttl seconds, then per item its JSON entry.
-- Returns how many were kept (an item whose marker exists was kept by an
-- earlier delivery of the same request: Meta redelivers for days).
--
-- Markers are read first and written last: a script that fails halfway
-- keeps what it wrote, so a write refused at the list (a full Redis, a
-- key of the wrong type) must leave no marker that would make the
-- redelivery skip the item.
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local fresh = {}
for i = 3, #ARGV do
  if redis.call('EXISTS', markers[i]) == 0 then fresh[#fresh + 1] = i end
end
for _, i in ipairs(fresh) do
  redis.call('RPUSH', unroutable, ARGV[i])
end
-- Oldest first out: the list stays bounded whatever a sender does, and the
-- count of what was dropped is kept for the operator.
local over = redis.call('LLEN', unroutable) - cap
if over > 0 then
  redis.call('LPOP', unroutable, over)
  redis.call('INCRBY', trimmed, over)
end
for _, i in ipairs(fresh) do
  redis.call('SET', markers[i], '1', 'EX', ttl)
end
return #fresh

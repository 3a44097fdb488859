-- Coalescing (a destination's `coalesce`): the group of a claimed key's
-- messages its next request carries, or the key handed back to wait for more.
-- KEYS: lane, leases, owner, delayed, attempts, wake, health
local lane, leases, owner, delayed, attempts, wake, health =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- ARGV: ordering key, token, window ms, max messages
-- Returns LEASE_LOST; {0, due ms} when the key went to `delayed` to wait out
-- the window (no attempt counted: its head arrived less than a window ago,
-- fewer than max messages wait and it is not a probe); else {1, entry, ...}:
-- the group, oldest first.
-- A group once formed is pinned (_lib.lua's pinned_group) until ack.lua
-- acknowledges it or fail.lua gives it up, so every retry sends the same
-- messages under the same idempotency key; a pin whose head is no longer the
-- lane's (a replay put a letter in front) is formed again.
local k, token = ARGV[1], ARGV[2]
if not holds_lease(owner, k, token) then return LEASE_LOST end
local head = redis.call('LINDEX', lane, 0)
if not head then return {1} end
local pinned = pinned_group(attempts, lane, k, head)
if pinned then
  table.insert(pinned, 1, 1)
  return pinned
end
local _, envelope = split_entry(head)
local most = tonumber(ARGV[4])
local due = arrival_ms(envelope) + tonumber(ARGV[3])
if due > now_ms() and redis.call('LLEN', lane) < most
    and redis.call('HGET', health, 'probe_key') ~= k then
  redis.call('ZREM', leases, k)
  redis.call('HDEL', owner, k)
  redis.call('ZADD', delayed, due, k)
  -- A worker asleep past `due` looks again.
  nudge(wake)
  return {0, due}
end
local group = redis.call('LRANGE', lane, 0, most - 1)
redis.call('HSET', attempts, GROUP_MARK .. k, #group .. ' ' .. (envelope_id(envelope) or ''))
table.insert(group, 1, 1)
return group

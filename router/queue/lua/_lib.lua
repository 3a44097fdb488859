-- Shared by every script: router/queue/scripts.py prepends this file when it loads
-- a script (as BullMQ's `--- @include` does), so each helper is written once.
--
-- Return codes: a script that changes a claimed key first checks that the
-- caller still holds its lease (the fencing token in `owner`), and returns
-- LEASE_LOST (-1) when it does not, changing nothing. Otherwise it returns 1
-- (done), 0 (nothing to do), or the data its header describes.
local LEASE_LOST = -1

-- The scripts a delivery runs (claim, ack) give Redis strings, not Lua
-- numbers, as command arguments ('0', not 0): Redis 7.0 formats a number
-- argument with %.17g, which costs about as much as a small command does.

-- Milliseconds on the Redis server's clock, so that instances with skewed
-- clocks agree on leases and backoffs.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Wake one worker blocked in BLPOP on `wake`; the list never holds more
-- than one nudge (one already waiting there: one command, nothing to add).
local function nudge(wake)
  if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
end

-- True when `token` is the fencing token of the claim of `key`.
local function holds_lease(owner, key, token)
  return redis.call('HGET', owner, key) == token
end


-- Outbound rate limit of a destination shard (a destination's `rate_limit`;
-- router/queue/outbound_rate.py), as GCRA: `throttle` holds the theoretical
-- arrival time (TAT, µs on the server clock), which each start pushes
-- `interval` µs further. A start conforms while TAT - now <= (burst - 1) *
-- interval: `burst` starts may go at once after a quiet time, then one per
-- interval. A request held back writes nothing: it costs no attempt.
-- How many of `want` starts conform at `now` (ms), and the TAT to pass on.
local function throttle_allows(throttle, interval, burst, now, want)
  local now_us = now * 1000
  local tat = math.max(tonumber(redis.call('GET', throttle) or '0'), now_us)
  local n = math.floor((now_us - tat) / interval) + burst
  if n > want then n = want end
  if n < 0 then n = 0 end
  return n, tat
end

-- Record `n` starts from `tat` (throttle_allows's); returns when (ms) the
-- next start conforms. The key expires once TAT has passed: an absent key
-- is a full allowance, exactly what a TAT in the past means.
local function throttle_take(throttle, interval, burst, now, tat, n)
  if n > 0 then
    tat = tat + n * interval
    redis.call('SET', throttle, string.format('%.0f', tat),
      'PX', math.ceil((tat - now * 1000) / 1000) + 1)
  end
  return math.ceil((tat - (burst - 1) * interval) / 1000)
end

-- Arrival time (ms) of a stored envelope (or lane entry); nil when it has
-- none. The router encodes {"id":"...","ts":<ms>,...} ({"rp":1,"id":...
-- once replayed) and leaves ,"ts":<ms> out when the id carries that same
-- millisecond: msg_, 11 hex digits of ms, 16 random ones
-- (router/queue/envelope.py). An id holds no quote, so the first "id" is
-- the envelope's own, and "ts" is read only right after it, never from the
-- body (no JSON decoding: the matches end a few bytes in). A `ts` comes
-- back as its digits, a string (what ZADD takes without formatting a
-- number); a time from the id as a number (about 0.2 µs more than `ts`).
local function arrival_of(envelope)
  local id, after = string.match(envelope, '"id":"([^"]*)"()')
  if not id then return nil end
  local ts = string.match(envelope, '^,"ts":(%d+)', after)
  if ts then return ts end
  if #id == 31 and string.find(id, '^msg_%x+$') then
    return tonumber(string.sub(id, 5, 15), 16)
  end
  return nil
end

-- The same as a number; anything without one counts as arriving now.
local function arrival_ms(envelope)
  return tonumber(arrival_of(envelope)) or now_ms()
end

-- A lane entry is `<n>:` then the envelope, n its sequence number for the
-- destination and ordering key (router/queue/envelope.py); an envelope
-- starts with '{', so an entry stored before numbers existed has no prefix.
-- Returns the entry's prefix ('' for none) and its envelope.
local function split_entry(entry)
  if string.byte(entry, 1) == 123 then return '', entry end -- '{'
  local colon = string.find(entry, ':', 1, true)
  return string.sub(entry, 1, colon), string.sub(entry, colon + 1)
end

-- The next sequence number of ordering key `k` in `seq` (keys.py), as the
-- prefix of the lane entry of `envelope` (an envelope, never an entry).
local function numbered(seq, k, envelope)
  return string.format('%.0f:', redis.call('HINCRBY', seq, k, 1)) .. envelope
end

-- Keep `heads` (ordering key -> arrival of its head message) in step with a
-- lane whose head changed: the oldest waiting message is then one ZRANGE.
-- Returns the new head (false: the lane is empty).
local function track_head(heads, lane, k)
  local head = redis.call('LINDEX', lane, '0')
  if head then
    redis.call('ZADD', heads, arrival_of(head) or now_ms(), k)
  else
    redis.call('ZREM', heads, k)
  end
  return head
end

-- The message log (router/queue/message_log.py): each message's story at this
-- destination shard. `log` is a hash: field <id> holds the message's record
-- (JSON: n entries, failed entries, state, key, received_at ms, seq: see
-- log_record_parts) and
-- field <id>:<i> its i-th entry (JSON built by the worker: attempt,
-- started_at, duration_ms, outcome, status, error, response). `logged` is a
-- sorted set: id -> received_at, what retention trims (oldest first) and
-- search reads (newest first). `policy` is '' (the log is off) or
-- '<max messages> <max age ms>'.

-- The message id of an envelope: the router encodes it first,
-- {"id":"...",...} ({"rp":1,"id":... once replayed), and an id holds no quote.
local function envelope_id(envelope)
  return string.match(envelope, '"id":"([^"]*)"')
end

-- Delete a message's record and its entries.
local function log_forget(log, logged, id)
  local raw = redis.call('HGET', log, id)
  if raw then
    local fields = {id}
    local n = tonumber(string.match(raw, '"n":(%d+)')) or 0
    for i = 1, n do fields[#fields + 1] = id .. ':' .. i end
    redis.call('HDEL', log, unpack(fields))
  end
  redis.call('ZREM', logged, id)
end

-- Retention: at most `max messages` stories, none older than `max age`;
-- a few removed per call (each call adds at most one), so no call holds
-- Redis long however much is over.
local TRIM_STEP = 8
local TRIM_STEP_TEXT = '8'
local function log_trim(log, logged, policy, now)
  local max_messages, max_age = string.match(policy, '^(%d+) (%d+)$')
  max_messages, max_age = tonumber(max_messages), tonumber(max_age)
  local over = redis.call('ZCARD', logged) - max_messages
  local drop = {}
  if over > 0 then
    drop = redis.call('ZRANGE', logged, 0, math.min(over, TRIM_STEP) - 1)
  elseif max_age > 0 then
    -- (Every message stored asks: strings, as the delivery scripts give.)
    drop = redis.call('ZRANGEBYSCORE', logged, '-inf', string.format('%.0f', now - max_age),
      'LIMIT', '0', TRIM_STEP_TEXT)
  end
  for _, id in ipairs(drop) do log_forget(log, logged, id) end
end

-- A record is written with its changing fields first, in this order:
-- {"n":<entries>,"failed":<failures>,"state":"<state>",<the rest>}, so that
-- an entry or a state changes it by rewriting that head, without decoding
-- and encoding JSON (the rest never changes). Readers decode it as any
-- JSON object (field order means nothing to them); a record in another
-- order (cjson's, stored before this layout) is decoded once and rewritten
-- in this one. Returns the record's n, failures and that rest.
local function log_record_parts(raw)
  local n, failed, rest = string.match(raw, '^{"n":(%d+),"failed":(%d+),"state":"%a+"(,.*)$')
  if n then return tonumber(n), tonumber(failed), rest end
  local record = cjson.decode(raw)
  n, failed = record.n or 0, record.failed or 0
  record.n, record.failed, record.state = nil, nil, nil
  rest = cjson.encode(record) -- never empty: a record has its key
  return n, failed, ',' .. string.sub(rest, 2)
end

local function log_record(n, failed, state, rest)
  return string.format('{"n":%.0f,"failed":%.0f,"state":"%s"', n, failed, state) .. rest
end

-- The unchanging rest of a new record: its key, when it arrived, its
-- sequence number (from its lane entry's prefix; none: left out).
local function log_record_rest(k, arrival, prefix)
  local seq = tonumber(string.sub(prefix, 1, -2))
  local rest = ',"key":' .. cjson.encode(k) .. string.format(',"received_at":%.0f', arrival)
  if seq then rest = rest .. string.format(',"seq":%.0f', seq) end
  return rest .. '}'
end

-- A message stored here: its record, state waiting, no entries yet.
local function log_received(log, logged, policy, id, k, entry, arrival)
  if policy == '' then return end
  local prefix = split_entry(entry)
  redis.call('HSET', log, id, log_record(0, 0, 'waiting', log_record_rest(k, arrival, prefix)))
  redis.call('ZADD', logged, arrival, id)
  log_trim(log, logged, policy, arrival)
end

-- One more entry of message `id`'s story (`item`, JSON), its state now
-- `state`; `failed` when the entry is a failure. `entry` is its lane entry:
-- a message without a record (stored while the log was off, or moved in)
-- gets one from it, unless it is older than every story kept: then
-- retention dropped its story while it waited, and it stays dropped (the
-- stories kept never outgrow `max messages` this way).
local function log_entry(log, logged, id, k, entry, item, state, failed)
  local raw = redis.call('HGET', log, id)
  local n, failures, rest
  if raw then
    n, failures, rest = log_record_parts(raw)
  else
    local prefix, envelope = split_entry(entry)
    local arrival = arrival_ms(envelope)
    local oldest = redis.call('ZRANGE', logged, 0, 0, 'WITHSCORES')
    -- Older than the oldest kept in `logged`'s own order (arrival, then
    -- id): messages of one millisecond tie on arrival, and one trimmed
    -- before the oldest kept must not come back beside it.
    if oldest[2] then
      local first = tonumber(oldest[2])
      if arrival < first or (arrival == first and id < oldest[1]) then return end
    end
    n, failures, rest = 0, 0, log_record_rest(k, arrival, prefix)
    redis.call('ZADD', logged, arrival, id)
  end
  n = n + 1
  if failed then failures = failures + 1 end
  redis.call('HSET', log, id, log_record(n, failures, state, rest), id .. ':' .. n, item)
end

-- Only the state of a logged message changes (a replay, an unblock).
local function log_state(log, id, state)
  local raw = redis.call('HGET', log, id)
  if raw then
    local n, failures, rest = log_record_parts(raw)
    redis.call('HSET', log, id, log_record(n, failures, state, rest))
  end
end

-- Coalescing (gather.lua): the attempts hash also pins a key's group under
-- this byte then the key (never an ordering key: UTF-8 has no byte 255).
local GROUP_MARK = '\255'

-- The pinned group of key `k` whose lane `lane` has `head` at its head (the
-- attempts hash's field GROUP_MARK..k: '<size> <head id>'): its entries,
-- oldest first; nil when it has none, or a pin of a former head (a replay
-- put a letter in front).
local function pinned_group(attempts, lane, k, head)
  local pin = redis.call('HGET', attempts, GROUP_MARK .. k)
  if not pin then return nil end
  local size, pinned = string.match(pin, '^(%d+) (.*)$')
  local _, envelope = split_entry(head)
  if pinned ~= (envelope_id(envelope) or '') then return nil end
  return redis.call('LRANGE', lane, 0, tonumber(size) - 1)
end

-- The messages after the head of a coalesced request (ack.lua, fail.lua),
-- from ARGV at `at`: their count (absent: not coalesced), then each one's
-- lane entry and message id. A list of {entry, id}, oldest first.
local function group_rest(at)
  local rest = {}
  for i = 1, tonumber(ARGV[at] or '0') do
    rest[i] = {ARGV[at + 2 * i - 1], ARGV[at + 2 * i]}
  end
  return rest
end

-- Append one message to the tail of key `k`'s lane (enqueue, and a move
-- from another destination: move_in.lua). A lane that was empty held its key
-- in none of ready/leases/delayed: the key becomes ready.
local function append_message(lane, ready, wake, counts, heads, k, envelope, arrival)
  redis.call('HINCRBY', counts, 'messages', 1)
  if redis.call('RPUSH', lane, envelope) == 1 then
    redis.call('RPUSH', ready, k)
    redis.call('ZADD', heads, arrival or arrival_ms(envelope), k)
    nudge(wake)
  end
end

-- One message into the lanes of its `n` destinations (enqueue.lua and
-- enqueue_many.lua), whose KEYS groups (lane, ready, wake, seen, counts,
-- heads, seq, log, logged) start after the first `g` groups; per
-- destination, ARGV from key_at holds its ordering-key value and its
-- message log policy (log_trim). Returns the destinations written and
-- the id stored: when every destination had already seen the dedup id,
-- 0 and the id stored the first time.
-- Each destination's lane gets the envelope behind that destination's next
-- sequence number for the key (HINCRBY seq, here in the step that appends
-- it, so numbers follow lane order exactly); a duplicate takes no number.
local function store_message(g, n, envelope, id, dedup, ttl, replicate, key_at)
  local LANE, READY, WAKE, SEEN, COUNTS, HEADS, SEQ, LOG, LOGGED = 1, 2, 3, 4, 5, 6, 7, 8, 9
  local GROUP = 9
  local arrival = arrival_ms(envelope)
  local fresh = {}
  local original = id
  local first_marker = nil -- the first destination's marker, as it was
  for i = 0, n - 1 do
    local seen = false
    if dedup ~= '' then
      local prev = redis.call('GET', KEYS[(g + i) * GROUP + SEEN])
      if prev then
        seen = true
        original = prev
        if i == 0 then first_marker = prev end
      end
    end
    if not seen then fresh[#fresh + 1] = i end
  end
  -- A partly seen id (a fan-out half done on a Cluster) completes the
  -- missing destinations under the id that was stored first.
  if #fresh < n then id = original end
  -- A duplicate changes nothing, so a WAIT after it would not cover the
  -- original write, which may not have reached a replica yet (its first
  -- request timed out waiting): rewriting a marker as it is puts this
  -- connection's replication offset past the original. (ROUTER_REDIS_WAIT
  -- only; pcall: on a full Redis the duplicate is still answered as one.)
  if #fresh == 0 and replicate == '1' and n > 0 then
    redis.pcall('SET', KEYS[g * GROUP + SEEN], first_marker, 'KEEPTTL')
  end
  for _, i in ipairs(fresh) do
    local base = (g + i) * GROUP
    local key = ARGV[key_at + 2 * i]
    if dedup ~= '' then redis.call('SET', KEYS[base + SEEN], id, 'EX', ttl) end
    local entry = numbered(KEYS[base + SEQ], key, envelope)
    append_message(KEYS[base + LANE], KEYS[base + READY], KEYS[base + WAKE],
      KEYS[base + COUNTS], KEYS[base + HEADS], key, entry, arrival)
    log_received(KEYS[base + LOG], KEYS[base + LOGGED], ARGV[key_at + 2 * i + 1], id, key,
      entry, arrival)
  end
  return #fresh, id
end

-- The circuit breaker (docs/destination-health.md). `health` is a hash that
-- exists only while something holds the destination: `state` = 'down' (with
-- `since`, `onset`, `probe_at`, `probe_ms`, `probe_key`, `error`) after
-- failures on many ordering keys with no success between them, and/or
-- `hold_until` (ms) after a Retry-After. `failing` is a sorted set: ordering
-- key -> time of its counted failure since the destination's last success.
-- `suspects`: ordering key -> time of its first failure since its own last
-- success. `breaker` (a hash): `recovered`, when (ms) the destination last
-- came back up (a failure of a message that waited through that outage does
-- not count: fail.lua), and `streak`, when the current run of counted
-- failures began (the outage's `onset` once it opens).

-- Most waiting keys reopen sorts by their head's arrival in Lua (about
-- 30 ms of Redis time at this size); past it, a cheaper step in C.
local REOPEN_SORT_MAX = 5000

-- The destination answered: it is up. Every conversation that waited because
-- of the outage, in `ready` (due while it was down) or `delayed` (its own
-- backoff), goes to `ready` at once, the one with the oldest head message
-- first, instead of waiting out a backoff grown during the outage. A key that
-- was failing on its own since before the outage's first counted failure
-- (`onset`) keeps its own backoff: the outage did not cause it, and resuming
-- it would only repeat a failure (`everyone`: an operator's retry resumes
-- those too). Once per outage. Returns how many keys resumed.
local function reopen(health, failing, ready, delayed, heads, wake, suspects, breaker, everyone)
  local now = now_ms()
  local onset = tonumber(redis.call('HGET', health, 'onset') or '')
  -- The down state goes first, whichever way the keys resume. A Retry-After
  -- hold (hold_until) stays: the destination asked for it.
  redis.call('DEL', failing)
  redis.call('HDEL', health, 'state', 'since', 'onset', 'probe_at', 'probe_ms', 'probe_key', 'error')
  redis.call('HSET', breaker, 'recovered', now)
  local count = redis.call('LLEN', ready) + redis.call('ZCARD', delayed)
  if count > REOPEN_SORT_MAX then
    -- Too many to sort here without holding Redis (1.3 s at 200,000):
    -- every backoff ends now, in the order they would have ended (each due
    -- time scaled to a moment long past, one ZUNIONSTORE in C), so claims
    -- take the keys that were due during the outage, then these, a hundred
    -- at a time to the front of ready.
    redis.call('ZUNIONSTORE', delayed, 1, delayed, 'WEIGHTS', 0.000001)
    nudge(wake)
    return count
  end
  local waiting = {}
  local seen = {}
  local kept = 0 -- keys left to their own backoff
  local function add(list, from_delayed)
    for _, k in ipairs(list) do
      if not seen[k] then
        seen[k] = true
        local first = from_delayed and onset and not everyone
          and tonumber(redis.call('ZSCORE', suspects, k))
        if first and first < onset then
          kept = kept + 1
        else
          -- A key without a tracked head (a queue not counted yet) sorts last.
          waiting[#waiting + 1] = {tonumber(redis.call('ZSCORE', heads, k)) or math.huge, k}
        end
      end
    end
  end
  add(redis.call('LRANGE', ready, 0, -1), false)
  add(redis.call('ZRANGE', delayed, 0, -1), true)
  table.sort(waiting, function(a, b) return a[1] < b[1] end)
  redis.call('DEL', ready)
  if kept == 0 then
    redis.call('DEL', delayed)
  else
    for _, entry in ipairs(waiting) do redis.call('ZREM', delayed, entry[2]) end
  end
  -- RPUSH takes many values at once; a few thousand per call keeps Lua's
  -- unpack within its stack limit.
  local chunk = {}
  for i, entry in ipairs(waiting) do
    chunk[#chunk + 1] = entry[2]
    if #chunk == 1000 or i == #waiting then
      redis.call('RPUSH', ready, unpack(chunk))
      chunk = {}
    end
  end
  if #waiting > 0 then nudge(wake) end
  return #waiting
end

-- Move the head of key `k`'s lane to the dead letters, with error `err` and
-- the `made` attempts (fail.lua's give-up, skip.lua's skip). The letter
-- keeps its envelope and, apart, its sequence number (none for an entry
-- stored without one): a replay puts it back with it. The next message,
-- if any, starts afresh. Returns the envelope and its sequence number
-- (nil: none); the caller puts the key where its lane now belongs.
local function dead_letter(lane, dead, attempts, last_error, counts, heads, k, err, made, now)
  local prefix, envelope = split_entry(redis.call('LPOP', lane))
  local seq = tonumber(string.sub(prefix, 1, -2))
  redis.call('RPUSH', dead, cjson.encode({
    key = k, envelope = envelope, error = err, attempts = made, dead_at = now, seq = seq}))
  redis.call('HDEL', attempts, k, GROUP_MARK .. k) -- a pinned group is over too
  redis.call('HDEL', last_error, k)
  redis.call('HINCRBY', counts, 'messages', -1)
  track_head(heads, lane, k)
  return envelope, seq
end

-- One conversation paused by an operator (`paused_keys`, keys.py): key ->
-- {"since": ms, "parked": true}. A paused key is scheduled as any other
-- until its turn comes: claim.lua then parks it (takes it out of ready
-- without claiming it, and marks it `parked`), so a parked key is in none
-- of ready/leases/delayed/blocked and its lane is never empty (a script
-- that empties it clears the mark). resume_key.lua puts a parked key back
-- in ready; one not parked is where it was. Its entry, or nil.
local function paused_entry(paused_keys, k)
  local raw = redis.call('HGET', paused_keys, k)
  if raw then return cjson.decode(raw) end
  return nil
end

-- Set or clear the parked mark of a paused key's `entry`.
local function mark_parked(paused_keys, k, entry, parked)
  if parked then entry.parked = true else entry.parked = nil end
  redis.call('HSET', paused_keys, k, cjson.encode(entry))
end

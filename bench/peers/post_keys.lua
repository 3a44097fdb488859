-- The cluster load (bench/cluster.py): post.lua's message, its wa_id going
-- round 1,000 values ("4491234" and 0000 to 0999, as long as post.lua's), so
-- that a destination with `shards: N` has every shard written to (one wa_id
-- lives in one shard: post.lua would load a single Redis Cluster master).
-- The requests are formatted once, in init(), and sent in turn.
--   wrk -t1 -c32 -d10s -s bench/peers/post_keys.lua http://127.0.0.1:3000/v1/store_message
wrk.method = "POST"
wrk.body = '{"mensaje":"Hola!","wa_id":"44912345678"}'
wrk.headers["Content-Type"] = "application/json"

local KEYS = 1000

function init(args)
  requests = {}
  for i = 0, KEYS - 1 do
    local body = string.format('{"mensaje":"Hola!","wa_id":"4491234%04d"}', i)
    requests[i + 1] = wrk.format(nil, nil, nil, body)
  end
  n = 0
end

function request()
  n = n % KEYS + 1
  return requests[n]
end

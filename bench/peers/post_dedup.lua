-- The dedup load (bench/ingest.py): post.lua's message, each request with its
-- own Idempotency-Key, so the router checks and sets a dedup marker for every
-- message and stores every one of them (a repeated key would be answered 200
-- without being stored, and the bench's count of stored messages would fail).
-- Keys are "<tag>-<thread>-<n>": the tag (first script argument) differs for
-- every wrk run against the same Redis, the thread number is given out in
-- setup(), n counts the thread's requests.
--   wrk -t1 -c32 -d10s -s bench/peers/post_dedup.lua http://127.0.0.1:3000/v1/store_message -- run1
wrk.method = "POST"
wrk.body = '{"mensaje":"Hola!","wa_id":"44912345678"}'
wrk.headers["Content-Type"] = "application/json"

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  tag = args[1] or "run"
  sent = 0
end

function request()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = tag .. "-" .. thread_number .. "-" .. sent
  return wrk.format()
end

-- The ingest load (bench/ingest.py): wrk POSTs this one chat message as JSON,
-- the same body to the ceiling, the floor and `router api`. The bench reads
-- wa_id from here to find the router's lane and count what was stored.
--   wrk -t1 -c32 -d10s -s bench/peers/post.lua http://127.0.0.1:3000/v1/store_message
wrk.method = "POST"
wrk.body = '{"mensaje":"Hola!","wa_id":"44912345678"}'
wrk.headers["Content-Type"] = "application/json"

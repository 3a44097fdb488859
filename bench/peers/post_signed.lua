-- The route-auth load (bench/ingest.py): post.lua's message with an
-- `X-Hub-Signature-256: sha256=<hex>` header, HMAC-SHA256 of this exact body
-- under the route's secret, as Meta (WhatsApp) signs its webhooks. The body
-- never changes, so the bench computes the signature once and passes it as
-- the first script argument; every request is the same bytes, as with post.lua.
--   wrk -t1 -c32 -d10s -s bench/peers/post_signed.lua http://127.0.0.1:3000/v1/store_message -- sha256=...
wrk.method = "POST"
wrk.body = '{"mensaje":"Hola!","wa_id":"44912345678"}'
wrk.headers["Content-Type"] = "application/json"

function init(args)
  wrk.headers["X-Hub-Signature-256"] = args[1]
end

-- post.lua's message with a sender's W3C `traceparent` (bench/tracing.py):
-- the same header on every request, so the tracing-on router continues one
-- trace per request as it would a sender's, and the tracing-off one stores
-- and forwards it as it always does.
wrk.method = "POST"
wrk.body = '{"mensaje":"Hola!","wa_id":"44912345678"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

"""Ingest: a POSTed body turned into stored messages or a clear refusal,
per-sender rate limits, W3C trace context, and when writes are safe."""

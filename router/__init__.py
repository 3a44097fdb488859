"""message-router: webhook ingest -> Redis lanes per destination -> delivery plugins."""

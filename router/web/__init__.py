"""The HTTP app: ingest routes, health, the admin API, the API documents
and the dashboard (ui/)."""

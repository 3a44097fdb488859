"""The API documents: the OpenAPI document (document.py assembles it from
what each kind of route says: ingest.py and ingest_answers.py, health.py,
admin.py, with the shared parts of parts.py) and the docs page at /schema."""

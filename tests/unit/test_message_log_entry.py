"""A message log entry as the worker builds it (router.queue.message_log.entry):
what a plugin hands back is kept only when it is what the API says, the
answer is cut to response_bytes after its secrets are starred."""

from __future__ import annotations

import json

from router.ops.redaction import Redactor
from router.queue.message_log import entry


def test_an_entry_holds_what_was_given() -> None:
    raw = entry(
        2,
        "failed",
        started_at_ms=1_700_000_000_000,
        duration_ms=12.345,
        status=503,
        error="HTTP 503: busy",
        response=b'{"error":"busy"}',
        response_bytes=4096,
    )
    assert json.loads(raw) == {
        "attempt": 2,
        "outcome": "failed",
        "started_at": 1_700_000_000_000,
        "duration_ms": 12.3,
        "status": 503,
        "error": "HTTP 503: busy",
        "response": '{"error":"busy"}',
    }


def test_what_a_plugin_should_not_have_returned_is_left_out() -> None:
    assert json.loads(entry(1, "ok", status=True, response=123, response_bytes=10)) == {
        "attempt": 1,
        "outcome": "ok",
    }
    assert json.loads(entry(1, "ok", status="200", response=object(), response_bytes=10)) == {
        "attempt": 1,
        "outcome": "ok",
    }
    # Text instead of bytes is taken as its UTF-8 bytes.
    assert json.loads(entry(1, "ok", response="hola", response_bytes=10))["response"] == "hola"


def test_the_answer_is_cut_after_its_secrets_are_starred() -> None:
    secret = "s3cr3t-value"
    redactor = Redactor([secret])
    answer = ("x" * 20 + secret + "y" * 100).encode()
    kept = json.loads(entry(1, "ok", response=answer, response_bytes=26, redactor=redactor))
    assert secret[:6] not in kept["response"]  # no half of it at the cut
    assert len(kept["response"].encode()) <= 26
    # A character beyond ASCII is never split at the cut.
    cut = json.loads(entry(1, "ok", response="ñ".encode() * 10, response_bytes=5))
    assert cut["response"] == "ññ"

"""The chatbot destination: POST each message to the bot and treat its answer.

The bot acknowledges a message with a 2xx whose body is not an error. It
fails an attempt with a non-2xx status, or with a 2xx whose JSON body says
so: ``{"status": "error"}`` (also "fail"/"failed"), a numeric ``status`` of
400 or more, or ``{"ok": false}``. A timeout or refused connection fails
the attempt too; the router then backs off and retries the same message.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from router.hookspecs import hookimpl
from router.http_sink import HttpOptions, HttpSink
from router.sinks import DeliveryFailed, SinkType

_ERROR_WORDS = {"error", "fail", "failed", "failure"}


def error_in_body(payload: Any) -> str | None:
    """The error a 2xx JSON body reports, or None when it reports success."""
    if not isinstance(payload, dict):
        return None
    status = payload.get("status")
    if isinstance(status, str) and status.strip().lower() in _ERROR_WORDS:
        return f"bot answered status {status!r}"
    if isinstance(status, int | float) and not isinstance(status, bool) and status >= 400:
        return f"bot answered status {status:g}"
    if payload.get("ok") is False:
        return "bot answered ok: false"
    return None


class ChatbotSink(HttpSink):
    def check(self, response: httpx.Response) -> None:
        super().check(response)
        if not response.content:
            return
        try:
            payload = json.loads(response.content)
        except ValueError:
            return  # a 2xx with a body that is not JSON is still an acknowledgement
        error = error_in_body(payload)
        if error:
            detail = payload.get("error") or payload.get("message")
            raise DeliveryFailed(f"{error}: {detail}" if detail else error)


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="chatbot",
            factory=ChatbotSink,
            options=HttpOptions,
            description="POST the message to the chatbot; a 2xx error body fails it",
        )
    ]

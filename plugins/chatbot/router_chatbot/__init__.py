"""The chatbot destination: POST each message to the bot and treat its answer.

The bot acknowledges a message with a 2xx whose body is not an error. It
fails an attempt with a non-2xx status, or with a 2xx whose JSON body says
so: ``{"status": "error"}`` (also "fail"/"failed"), a numeric ``status`` of
400 or more, or ``{"ok": false}``. A timeout or refused connection fails
the attempt too; the router then backs off and retries the same message.

The router reads at most the first 64 KiB of an answer
(``router.plugin.MAX_ANSWER_BYTES``). A longer answer is judged on the
top-level fields with plain values that come before anything nested in
that prefix (``{"status": "error", "detail": {...huge...}}`` still fails).
"""

from __future__ import annotations

import json
import re
from typing import Any

from router.plugin import DeliveryFailed, HttpOptions, HttpSink, SinkType, hookimpl

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


# One top-level member with a plain value: "name": "text" | number | true | false | null
_MEMBER = re.compile(
    r'\s*"((?:[^"\\]|\\.)*)"\s*:\s*'
    r'("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)\s*([,}])?'
)


def leading_fields(text: str) -> dict[str, Any]:
    """The top-level members with plain values at the start of a JSON object,
    as far as they can be read: all an answer cut short can tell."""
    start = re.match(r"\s*\{", text)
    fields: dict[str, Any] = {}
    pos = start.end() if start else len(text)
    while (member := _MEMBER.match(text, pos)) is not None:
        try:
            fields[json.loads(f'"{member.group(1)}"')] = json.loads(member.group(2))
        except ValueError:
            break
        if member.group(3) != ",":
            break
        pos = member.end()
    return fields


class ChatbotSink(HttpSink):
    def check_body(self, status: int, body: bytes) -> None:
        """A 2xx whose JSON body reports an error fails the attempt."""
        if not body:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            # Cut at the router's read limit, or not JSON at all (then no
            # fields are found and the 2xx acknowledges the message).
            payload = leading_fields(body.decode("utf-8", "replace"))
        error = error_in_body(payload)
        if error:
            detail = payload.get("error") or payload.get("message")
            raise DeliveryFailed(
                f"{error}: {detail}" if detail else error, status=status, response=body
            )


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="chatbot",
            factory=ChatbotSink,
            options=HttpOptions,
            circuit_breaker=True,
            description="POST the message to the chatbot; a 2xx error body fails it",
        )
    ]

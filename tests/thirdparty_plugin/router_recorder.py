"""A third-party sink for the tests: the `recorder` plugin.

Options:
  file: append one JSON line per delivery (id, key, attempt, body) to this file
  url: POST the body there (a 2xx acknowledges it), with the attempt number
       and message id as headers
  fail_first: raise RuntimeError on this many first calls (a buggy plugin)
"""

from __future__ import annotations

import asyncio
import json

import msgspec

from router.plugin import Delivery, DeliveryFailed, SinkContext, SinkType, hookimpl


class RecorderOptions(msgspec.Struct, forbid_unknown_fields=True):
    file: str | None = None
    url: str | None = None
    fail_first: int = 0


class RecorderSink:
    def __init__(self, options: RecorderOptions, context: SinkContext) -> None:
        if not options.file and not options.url:
            raise ValueError("recorder: set `file` or `url`")
        self.options = options
        self.context = context
        self.calls = 0

    async def deliver(self, delivery: Delivery) -> None:
        self.calls += 1
        if self.calls <= self.options.fail_first:
            raise RuntimeError(f"recorder: failing call {self.calls} on purpose")
        if self.options.url:
            response = await self.context.http.post(
                self.options.url,
                content=delivery.body,
                headers={
                    "content-type": "application/json",
                    "idempotency-key": delivery.id,
                    "x-router-attempt": str(delivery.attempt),
                    "x-recorder": "1",
                },
            )
            if not response.is_success:
                raise DeliveryFailed(f"HTTP {response.status_code}")
        if self.options.file:
            line = {
                "id": delivery.id,
                "key": delivery.key,
                "attempt": delivery.attempt,
                "destination": delivery.destination,
                "body": json.loads(delivery.body),
            }
            await asyncio.to_thread(_append, self.options.file, json.dumps(line) + "\n")

    async def aclose(self) -> None:
        pass


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="recorder",
            factory=RecorderSink,
            options=RecorderOptions,
            description="record each delivery to a file or POST it to a URL (test plugin)",
        )
    ]

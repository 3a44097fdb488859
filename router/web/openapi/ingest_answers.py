"""What an ingest route answers, as the OpenAPI document lists it
(router/web/openapi/ingest.py builds the route's operation): its 200 body
(stored; on a route with `when:` filters, where to; on a format route,
every message), its refusals and the answers every ingest route can give
(408, 413, 429, 503 with `stored`).

Only the statuses the router answers are listed: no 415 (Content-Type is
not checked), and a 422 only on a route with `on_no_match: reject` (a
valid message no destination's `when:` matches; a body that breaks a rule
is a 400). The error examples are produced by the router's own code on
that route (router/ingest/route.py, router/http/auth.py,
router/http/errors.py, the format's plugin), so they use the words the
router really answers with.
"""

from __future__ import annotations

import contextvars
import json
from typing import Any

from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
)
from redis.exceptions import OutOfMemoryError

from router.config.settings import Settings
from router.http.errors import BadRequest
from router.ingest.route import IngestRoute, NoMatch, Routed, decode_object
from router.plugin.formats import FormatRequest, IngestFormat
from router.redis.client import command_written
from router.web.openapi.parts import (
    ERROR_SCHEMA,
    answer,
    error_body,
    error_of,
    header,
    refusal,
    retry_after,
)

_STRING, _INTEGER, _OBJECT = OpenAPIType.STRING, OpenAPIType.INTEGER, OpenAPIType.OBJECT
_NULL = OpenAPIType.NULL

# -- bodies and headers --------------------------------------------------------

STORAGE_ERROR_SCHEMA = Schema(
    type=_OBJECT,
    required=["status", "error"],
    properties={
        **(ERROR_SCHEMA.properties or {}),
        "stored": Schema(
            type=_STRING,
            enum=["no", "unknown"],
            description=(
                '"no": certain, the message was not stored, retry when you like. '
                '"unknown": the write was sent and no answer came, Redis may have '
                "stored it: retry with the same dedup id (the error names it) and "
                "a retry that finds it answers 200 with duplicate: true. Present on "
                "every 503 about storing the message; absent only when the request "
                "never reached the route (too many connections waiting, see the "
                "description), which stored nothing."
            ),
        ),
    },
    description='An error body with `stored`: `{"status": "error", "error": "…", "stored": …}`.',
)

STORED_SCHEMA = Schema(
    type=_OBJECT,
    required=["status", "id", "duplicate"],
    properties={
        "status": Schema(const="ok"),
        "id": Schema(
            type=_STRING,
            pattern="^msg_[0-9a-f]+$",
            description="The message's id (the first one's, for a duplicate); destinations "
            "get it as the Idempotency-Key header.",
        ),
        "duplicate": Schema(
            type=OpenAPIType.BOOLEAN,
            description="true: the dedup id was seen within the route's dedup_ttl; "
            "nothing was stored again.",
        ),
    },
)


# The 200 of a route with `when:` filters (content routing): where it went.
ROUTED_SCHEMA = Schema(
    type=_OBJECT,
    required=["status", "id", "duplicate", "destinations"],
    properties={
        "status": Schema(const="ok"),
        "id": Schema(
            one_of=[Schema(type=_STRING, pattern="^msg_[0-9a-f]+$"), Schema(type=_NULL)],
            description="The message's id (the first one's, for a duplicate); null when it "
            "matched no destination and was stored nowhere.",
        ),
        "duplicate": (STORED_SCHEMA.properties or {})["duplicate"],
        "destinations": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=_STRING),
            description="The destinations whose `when:` the message matched (and those "
            "without one), in the route's order: it is stored for these. Empty: stored "
            "for none (on_no_match: accept).",
        ),
    },
)


def _stored_many(item: Schema) -> Schema:
    """The 200 of a format route: each message as `item` describes it."""
    return Schema(
        type=_OBJECT,
        required=["status", "messages", "skipped", "problems"],
        properties={
            "status": Schema(const="ok"),
            "messages": Schema(
                type=OpenAPIType.ARRAY,
                items=item,
                description="One per message of the request that was stored (or found a "
                "duplicate), in the request's order; all stored in one step.",
            ),
            "skipped": Schema(
                type=_INTEGER,
                minimum=0,
                description="Malformed items of the request left out (the rest is stored); "
                "each is logged and counted in router_ingest_items_skipped_total.",
            ),
            "problems": Schema(
                type=OpenAPIType.ARRAY,
                items=Schema(type=_STRING),
                description="What was wrong with each skipped item, and where.",
            ),
        },
    )


def _fields_of(schema: Schema, *names: str) -> Schema:
    """An object schema of some of `schema`'s properties, all required."""
    own = schema.properties or {}
    return Schema(type=_OBJECT, required=list(names), properties={k: own[k] for k in names})


STORED_MANY_SCHEMA = _stored_many(_fields_of(STORED_SCHEMA, "id", "duplicate"))
# On a format route with `when:` filters each message names its destinations.
ROUTED_MANY_SCHEMA = _stored_many(_fields_of(ROUTED_SCHEMA, "id", "duplicate", "destinations"))


_CLOSES: dict[str, OpenAPIHeader | Reference] = {
    "Connection": header(
        "The connection cannot carry another request.", Schema(type=_STRING, const="close")
    )
}


# -- answers -------------------------------------------------------------------


def _bad_request_example(ingest: IngestRoute) -> dict[str, Any]:
    empty: dict[str, Any] = {}
    error = (
        refusal(ingest.parse, b"{}")
        or refusal(ingest.targets, empty)
        or refusal(ingest.parse, b"[]")
        or BadRequest("body must be a JSON object")  # not reached: [] is always refused
    )
    return error_of(error)


def _unavailable_examples(ingest: IngestRoute, deadline: float) -> list[dict[str, Any]]:
    """A 503 with stored "no" (Redis refused: out of memory) and one with
    "unknown" (the write went out, no answer within the deadline)."""
    refused = ingest.unavailable(OutOfMemoryError("command not allowed when used memory"), deadline)
    sent = contextvars.copy_context()
    sent.run(command_written.set, True)
    lost = sent.run(ingest.unavailable, TimeoutError(), deadline)
    return [error_of(refused), error_of(lost)]


def _stored_answer(ingest: IngestRoute) -> OpenAPIResponse:
    """The 200: stored; on a route with `when:` filters, naming where."""
    example = "msg_1a2210d62071692a2cd6151b512"
    if not ingest.route.filters:
        return answer(
            "Stored in the queue of every destination of the route (or a duplicate: "
            "nothing stored again).",
            STORED_SCHEMA,
            {"status": "ok", "id": example, "duplicate": False},
            {"status": "ok", "id": example, "duplicate": True},
        )
    names = [d.name for d in ingest.route.destinations]
    # No example of the unrouted answer: the document drops null values
    # from examples, so its `"id": null` would not show; the text says it.
    unrouted = json.dumps({"status": "ok", **Routed(None, ()).answer()})
    return answer(
        "Stored in the queue of every destination whose `when:` filter the message matches "
        "(`destinations` names them), or a duplicate (nothing stored again)"
        + (
            f", or matched none: stored nowhere, counted in router_messages_unrouted_total "
            f"(on_no_match: accept), answered `{unrouted}`."
            if ingest.route.settings.on_no_match == "accept"
            else "."
        ),
        ROUTED_SCHEMA,
        {"status": "ok", "id": example, "duplicate": False, "destinations": names},
    )


def ingest_responses(ingest: IngestRoute, settings: Settings) -> dict[str, OpenAPIResponse]:
    if ingest.format is not None:
        own = _format_responses(ingest, ingest.format)
    else:
        own = _json_route_responses(ingest)
    return _shared_responses(ingest, settings, own)


def _json_route_responses(ingest: IngestRoute) -> dict[str, OpenAPIResponse]:
    """The 200, 400 and (with auth) 401 of a route that takes the router's
    own JSON body."""
    responses = {
        "200": _stored_answer(ingest),
        "400": answer(
            "Refused, nothing stored: invalid JSON or UTF-8 (with the byte offset), not an "
            "object, a missing or wrongly typed field, an empty or too long ordering key or "
            "dedup id, nesting deeper than max_depth, a string over max_string_length, an "
            "incomplete body, or malformed HTTP (then `Connection: close`).",
            ERROR_SCHEMA,
            _bad_request_example(ingest),
            error_body("invalid JSON: input data was truncated"),
        ),
    }
    responses |= _no_match_answer(ingest)
    if ingest.auth is not None:
        missing = refusal(ingest.auth.check, {}, b"")
        responses["401"] = answer(
            f"The route's `auth` ({ingest.auth.type}) check failed; nothing stored.",
            ERROR_SCHEMA,
            *([error_of(missing)] if missing is not None else []),
        )
    return responses


def _no_match_answer(ingest: IngestRoute) -> dict[str, OpenAPIResponse]:
    """The 422 of a route with `when:` filters and `on_no_match: reject`."""
    if not ingest.route.filters or ingest.route.settings.on_no_match != "reject":
        return {}
    return {
        "422": answer(
            "The request is valid but a message matches no destination's `when:` filter "
            "(on_no_match: reject); nothing stored.",
            ERROR_SCHEMA,
            error_of(NoMatch()),
        )
    }


def _format_request(ingest: IngestRoute, body: bytes) -> FormatRequest:
    """A request to the route's format as the router builds one (ingest.store_format)."""
    settings = ingest.route.settings
    return FormatRequest(
        body,
        {},
        ingest.route.format_options,
        lambda raw: decode_object(
            raw, settings.max_body, settings.max_depth, settings.max_string_length
        ),
    )


def _format_responses(ingest: IngestRoute, fmt: IngestFormat) -> dict[str, OpenAPIResponse]:
    """The 200, 400 and 401 of a format route: its messages listed, what the
    format's own code refuses."""
    refused = refusal(fmt.parse, _format_request(ingest, b"{}"))
    stored = {"id": "msg_1a2210d62071692a2cd6151b512", "duplicate": False}
    if ingest.route.filters:
        stored["destinations"] = [d.name for d in ingest.route.destinations]
    responses = {
        "200": answer(
            "Every message of the request stored in one step (each new or a duplicate); "
            "malformed items left out and named."
            + (
                " Each message names the destinations whose `when:` filter it matched "
                "(none: stored nowhere, id null)."
                if ingest.route.filters
                else ""
            ),
            ROUTED_MANY_SCHEMA if ingest.route.filters else STORED_MANY_SCHEMA,
            {"status": "ok", "messages": [stored], "skipped": 0, "problems": []},
        ),
        "400": answer(
            f"Refused, nothing stored: not a {fmt.name} webhook at all (invalid JSON or "
            "UTF-8, not the service's envelope), nesting deeper than max_depth, a string "
            "over max_string_length, an incomplete body, or malformed HTTP (then "
            "`Connection: close`).",
            ERROR_SCHEMA,
            *([error_of(refused)] if refused is not None else []),
            error_body("invalid JSON: input data was truncated"),
        ),
    }
    if fmt.answer is not None:  # the service's own answer, not the router's JSON
        own = fmt.answer(ingest.route.format_options)
        responses["200"] = OpenAPIResponse(
            description="Every message of the request stored in one step (each new or a "
            "duplicate; malformed items left out, logged and kept for `router unroutable`), "
            f"answered as the {fmt.name} service expects.",
            content={
                own.media_type: OpenAPIMediaType(
                    schema=Schema(type=_STRING), example=own.body.decode("utf-8", "replace")
                )
            },
        )
    responses |= _no_match_answer(ingest)
    if fmt.authenticate is not None:
        missing = refusal(fmt.authenticate, ingest.route.format_options, {}, b"")
        responses["401"] = answer(
            f"The {fmt.name} signature check failed; nothing stored.",
            ERROR_SCHEMA,
            *([error_of(missing)] if missing is not None else []),
        )
    return responses


def _shared_responses(
    ingest: IngestRoute, settings: Settings, responses: dict[str, OpenAPIResponse]
) -> dict[str, OpenAPIResponse]:
    """The answers every ingest route can give, after its own."""
    route = ingest.route.settings
    deadline = settings.ingest_deadline
    responses["408"] = answer(
        f"The request's headers or body did not arrive within {settings.header_timeout:g} s "
        "(ROUTER_HEADER_TIMEOUT); nothing stored, the connection is closed.",
        ERROR_SCHEMA,
        error_body(f"request body not received within {settings.header_timeout:g}s"),
        headers=_CLOSES,
    )
    responses["413"] = answer(
        f"The body is over the route's max_body, {route.max_body} bytes; nothing stored.",
        ERROR_SCHEMA,
        error_body(f"request body too large: the limit is {route.max_body} bytes"),
    )
    if route.rate_limit is not None:
        limit = route.rate_limit
        responses["429"] = answer(
            f"The sender (by {limit.per}) is over the route's rate_limit, {limit.requests} "
            f"messages per {limit.period:g} s; nothing stored.",
            ERROR_SCHEMA,
            error_body(
                f"rate limit: at most {limit.requests} messages per {limit.period:g}s "
                f"per {limit.per}"
            ),
            headers=retry_after("Seconds until the sender's window ends."),
        )
    responses["503"] = answer(
        "Redis could not store it within ROUTER_INGEST_DEADLINE "
        f"({deadline:g} s): unreachable, out of memory, or no answer; `stored` says whether "
        "that is certain. Also, without `stored`: the server had too many connections "
        "waiting for request headers and let this one go (`Connection: close`).",
        STORAGE_ERROR_SCHEMA,
        *_unavailable_examples(ingest, deadline),
        headers=retry_after("Seconds to wait before retrying (1)."),
    )
    return responses

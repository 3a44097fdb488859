"""What the admin endpoints' operations say in the OpenAPI document
(`operation_class=` of router/web/admin.py's handlers). Their 200 answers
are Litestar's own, from their types (router/web/admin_types.py), and
their tags and bearer auth come from their controller: this module adds
their errors and the two bodies they read themselves.

The admin endpoints are in the document only when ROUTER_ADMIN_TOKEN is
set, because only then do they exist (router/web/admin.py); documenting
them opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from router.web.openapi.parts import (
    ERROR_SCHEMA,
    JSON,
    answer,
    error_body,
    header,
    retry_after,
    schema_of,
)

_STRING = OpenAPIType.STRING

ADMIN_SCHEME = "adminToken"  # the security scheme of the admin endpoints

_COUNT_RANGE = "count must be from 1 to 2147483647 (leave it out for all)"
_NO_DESTINATION = error_body("no destination named 'crm'")

# The errors an admin endpoint may answer besides 401, 429 and 503, by the
# names its handler gives admin_operation (router/web/admin.py).
_ADMIN_ERRORS: dict[str, tuple[str, OpenAPIResponse]] = {
    "query": (
        "400",
        answer(
            "A query parameter is not a whole number, or out of its range (start 0 to "
            "2147483647, count 1 to 2147483647).",
            ERROR_SCHEMA,
            error_body("Validation failed for GET /admin/destinations/chatbot/dead?start=x"),
        ),
    ),
    "into": (
        "400",
        answer(
            "A query parameter is out of its range (`count` 1 to 2147483647), or `into` "
            "(which orphan/move needs) names no destination of routes.yaml, or the one "
            "named in the path.",
            ERROR_SCHEMA,
            error_body("into: no destination named 'crm' in routes.yaml"),
            error_body(_COUNT_RANGE),
        ),
    ),
    "count": (
        "400",
        answer(
            "`count` is not a whole number from 1 to 2147483647.",
            ERROR_SCHEMA,
            error_body(_COUNT_RANGE),
        ),
    ),
    "keys": (
        "400",
        answer(
            'The body is neither empty nor `{"keys": ["<ordering key>", ...]}` with a key.',
            ERROR_SCHEMA,
            error_body('"keys" is empty: leave the body out to retry every key'),
        ),
    ),
    "key": (
        "400",
        answer(
            "No `key` query parameter.",
            ERROR_SCHEMA,
            error_body("Missing required query parameter 'key' for url .../key"),
        ),
    ),
    # A body naming one conversation (ordering key): unblock, pause, resume, skip.
    "key_body": (
        "400",
        answer(
            'The body is not `{"key": "<ordering key>"}`.',
            ERROR_SCHEMA,
            error_body(
                'send a JSON body {"key": "<ordering key>"}: Object missing required field `key`'
            ),
        ),
    ),
    "no_message": (
        "404",
        answer(
            "No destination of that name in routes.yaml, or the conversation has no message.",
            ERROR_SCHEMA,
            _NO_DESTINATION,
            error_body("conversation '44912345678' of chatbot has no message to skip"),
        ),
    ),
    "search": (
        "400",
        answer(
            "`outcome` is not `failed`, `since` is no time (ISO 8601, ms since the epoch, or "
            "a duration back from now such as `15m`), or `limit` is not a whole number "
            "from 1 to 1000.",
            ERROR_SCHEMA,
            error_body("outcome 'ok': only `failed` is searched for"),
            error_body(
                "since 'yesterday': write an ISO 8601 time, ms since the epoch, or a "
                "duration back from now (15m, 2h, 7d)"
            ),
            error_body("limit must be from 1 to 1000"),
            error_body("Validation failed for GET /admin/destinations/chatbot/messages?limit=x"),
        ),
    ),
    "message": (
        "404",
        answer(
            "No destination's message log has that message (never stored, stored while the "
            "log was off, or dropped by its retention).",
            ERROR_SCHEMA,
            error_body("no destination's message log has a message 'msg_01J0'"),
        ),
    ),
    "destination": (
        "404",
        answer("No destination of that name in routes.yaml.", ERROR_SCHEMA, _NO_DESTINATION),
    ),
    "not_blocked": (
        "404",
        answer(
            "No destination of that name, or the key is not blocked.",
            ERROR_SCHEMA,
            _NO_DESTINATION,
            error_body("key '44912345678' of chatbot is not blocked"),
        ),
    ),
    "no_route": (
        "404",
        answer(
            "No route with that path in routes.yaml.",
            ERROR_SCHEMA,
            error_body("no route with path '/nowhere' in routes.yaml"),
        ),
    ),
    "no_format": (
        "409",
        answer(
            "The route has no `format:` (a JSON route keeps no unroutable items).",
            ERROR_SCHEMA,
            error_body("route /ingest has no `format:`: nothing to replay"),
        ),
    ),
    "conflict": (
        "409",
        answer(
            "Replay without `into` of a destination no longer in routes.yaml (nothing "
            "would deliver it); orphan/move or orphan/purge of one still in it; or a move of "
            "the destination into another one did not finish (call that one again first).",
            ERROR_SCHEMA,
            error_body(
                "slack is not in routes.yaml (orphaned): nothing would deliver its dead "
                "letters there; replay them into a configured destination with ?into=NAME, "
                "or purge them"
            ),
            error_body(
                "a move of slack into chatbot did not finish (interrupted): run it again "
                "into chatbot first, or a message could be in both"
            ),
        ),
    ),
}

# Every admin endpoint's: the guard's two refusals, and Redis not answering.
_ADMIN_ALWAYS = {
    "401": answer(
        "No `Authorization: Bearer <ROUTER_ADMIN_TOKEN>`, or another token.",
        ERROR_SCHEMA,
        error_body("admin endpoints need Authorization: Bearer <ROUTER_ADMIN_TOKEN>"),
        headers={"WWW-Authenticate": header("`Bearer`.", Schema(type=_STRING, const="Bearer"))},
    ),
    "429": answer(
        "Too many wrong tokens from this client (its IP address): every attempt is refused "
        "until `Retry-After` seconds have passed, the right token too.",
        ERROR_SCHEMA,
        error_body("too many wrong tokens from 203.0.113.9: try again in 4 s"),
        headers=retry_after("Seconds until this client may try a token again."),
    ),
    "503": answer(
        "Redis did not answer (unreachable, out of memory, timed out).",
        ERROR_SCHEMA,
        error_body("Redis unreachable (Connection refused); retry later"),
        headers=retry_after("Seconds to wait before retrying (1)."),
    ),
}


def admin_operation(
    *errors: str, body: type[msgspec.Struct] | None = None, body_optional: bool = False
) -> type[Operation]:
    """The Operation class of an admin endpoint (router/web/admin.py): Litestar's
    own (its 200 from the handler's answer type; tags and bearer auth from
    the controller), with the errors of `_ADMIN_ERRORS` named in `errors`,
    those of every admin endpoint, and the JSON `body` it reads itself."""
    responses = dict(_ADMIN_ERRORS[name] for name in errors) | _ADMIN_ALWAYS
    request_body = None
    if body is not None:
        schema = schema_of(msgspec.json.schema(body)["$defs"][body.__name__])
        media = {JSON: OpenAPIMediaType(schema=schema)}
        request_body = RequestBody(required=not body_optional, content=media)

    @dataclass
    class AdminOperation(Operation):
        def __post_init__(self) -> None:
            # Litestar's 200 (the answer type's schema); not its 400, whose
            # body is not the router's (router.http.errors).
            done = (self.responses or {})["200"]
            assert isinstance(done, OpenAPIResponse)
            done.description = "Done."
            self.responses = {"200": done, **responses}
            if request_body is not None:
                self.request_body = request_body

    return AdminOperation

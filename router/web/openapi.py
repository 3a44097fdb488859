"""The API documents: the OpenAPI document and the docs page.

`GET /schema/openapi.json` (and `.yaml`) is the OpenAPI 3.1 document,
`GET /schema` (and `/schema/swagger`) the docs page: Swagger UI, loaded from
files shipped inside this package (router/web/static/swagger-ui), so the page
works without internet access.

What Litestar derives from the handlers' signatures says little here: the
ingest handler reads its raw body itself (its checks are routes.yaml's, in
router/ingest/route.py), and every error goes through router/http/errors.py, whose
bodies are not Litestar's. So each handler names an Operation class from
this module (`operation_class=`), which fills in what the router really
does: for every ingest route, the body it requires (from routes.yaml), the
headers it honours, and every answer it can give with its JSON body; for
the health endpoints, their answers. The admin endpoints' 200 answers are
Litestar's own, from their types (router/web/admin_types.py), and their tags
and bearer auth come from their controller: this module adds their errors
and the two bodies they read themselves.

Decisions:
- The document is built once per app, from the routes.yaml it serves, and
  holds no secret: route auth is described by header name, never by value.
- The admin endpoints are in the document only when ROUTER_ADMIN_TOKEN is
  set, because only then do they exist (router/web/admin.py); documenting
  them opens nothing.
- A route with `auth: {type: header}` gets an apiKey security scheme (a
  client fills it in once, Swagger UI's "Authorize" included); the two
  signature types are header parameters instead, since a signature is
  computed per body and no security scheme can say so.
- Only the statuses the router answers are listed: no 415 (Content-Type is
  not checked), and a 422 only on a route with `on_no_match: reject` (a
  valid message no destination's `when:` matches; a body that breaks a
  rule is a 400). A 500
  ("internal error") is a bug, not an answer: the document's description
  names it once instead of every operation listing it.
- The error examples of an ingest route are produced by the router's own
  code on that route (ingest.py, auth.py, errors.py), so they use the
  words the router really answers with.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
    Tag,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router
from redis.exceptions import OutOfMemoryError

from router.config import Config, Route
from router.config.filters import is_nested
from router.config.settings import Settings
from router.http.auth import STANDARD_WEBHOOKS_TOLERANCE, Authenticator
from router.http.errors import ApiError, BadRequest
from router.ingest.route import MAX_KEY_LENGTH, IngestRoute, NoMatch, Routed, decode_object
from router.ingest.tracecontext import MAX_TRACESTATE
from router.plugin.formats import FormatRequest, IngestFormat
from router.redis.client import command_written

TITLE = "message-router"
VERSION = "0.1.0"
DOCS_PATH = "/schema"  # the docs page; the documents are below it

# The docs page's assets, shipped in the package (see its README.md).
SWAGGER_UI_VERSION = "5.35.0"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"
ASSETS_PATH = f"{DOCS_PATH}/static/swagger-ui"

ADMIN_SCHEME = "adminToken"  # the security scheme of the admin endpoints

_JSON = "application/json"
_STRING, _INTEGER, _OBJECT = OpenAPIType.STRING, OpenAPIType.INTEGER, OpenAPIType.OBJECT
_NULL = OpenAPIType.NULL

# -- bodies ------------------------------------------------------------------

ERROR_SCHEMA = Schema(
    type=_OBJECT,
    required=["status", "error"],
    properties={
        "status": Schema(const="error"),
        "error": Schema(type=_STRING, description="What is wrong, in words; names no secret."),
    },
    description='Every error body: `{"status": "error", "error": "<what is wrong>"}`.',
)

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


def _header(description: str, schema: Schema) -> OpenAPIHeader:
    return OpenAPIHeader(description=description, schema=schema, required=True)


def _retry_after(description: str) -> dict[str, OpenAPIHeader | Reference]:
    return {"Retry-After": _header(description, Schema(type=_INTEGER, minimum=1))}


_CLOSES: dict[str, OpenAPIHeader | Reference] = {
    "Connection": _header(
        "The connection cannot carry another request.", Schema(type=_STRING, const="close")
    )
}


def _examples(*bodies: dict[str, Any]) -> dict[str, Example | Reference]:
    return {f"example{i + 1}": Example(value=body) for i, body in enumerate(bodies)}


def _answer(
    description: str,
    schema: Schema = ERROR_SCHEMA,
    *examples: dict[str, Any],
    headers: dict[str, OpenAPIHeader | Reference] | None = None,
) -> OpenAPIResponse:
    media = OpenAPIMediaType(schema=schema, examples=_examples(*examples) if examples else None)
    return OpenAPIResponse(description=description, headers=headers, content={_JSON: media})


def _error_of(error: ApiError) -> dict[str, Any]:
    """The body the router answers for `error` (router.http.errors)."""
    return {"status": "error", "error": error.message, **error.extra}


def _error(message: str) -> dict[str, Any]:
    return {"status": "error", "error": message}


# -- ingest routes -------------------------------------------------------------

_FIELD_TYPES: dict[str, OpenAPIType | None] = {
    "string": _STRING,
    "number": OpenAPIType.NUMBER,
    "integer": _INTEGER,
    "boolean": OpenAPIType.BOOLEAN,
    "object": _OBJECT,
    "array": OpenAPIType.ARRAY,
    "any": None,
}

# An ordering key or dedup id in the body: a non-empty string or an integer
# (router.ingest.route._key_text).
_KEY_LIMITS = f"a non-empty string of at most {MAX_KEY_LENGTH} characters, or an integer"


def _key_schema(declared: str | None, description: str) -> Schema:
    """A body field used as an ordering key or dedup id, declared in
    `fields:` as `declared` (None: not declared)."""
    if declared == "string":
        return Schema(
            type=_STRING, min_length=1, max_length=MAX_KEY_LENGTH, description=description
        )
    if declared in ("integer", "number"):  # a float is refused as a key
        return Schema(type=_INTEGER, description=description)
    key = Schema(
        type=[_STRING, _INTEGER],
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description=description,
    )
    if declared in (None, "any"):
        return key
    # Declared boolean/object/array and used as a key: no body passes both.
    return Schema(all_of=[Schema(type=_FIELD_TYPES[declared]), key], description=description)


def _body_schema(route: Route) -> Schema:
    settings = route.settings
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, kind in settings.fields.items():
        properties[name] = Schema(type=_FIELD_TYPES[kind], description="Required by the route.")
        required.append(name)
    nested: list[str] = []
    for i, dest in enumerate(route.destinations):
        field = dest.ordering_key
        if field is None:
            continue
        if is_nested(field):  # a path into nested objects: said in words
            nested.append(f"`{field}` (ordering key of {dest.name})")
            continue
        used_by = [d.name for d in route.destinations if d.ordering_key == field]
        if route.filters and route.filters[i] is not None:
            # Needed only by a message the destination's filter matches.
            properties.setdefault(
                field,
                _key_schema(
                    settings.fields.get(field),
                    f"Ordering key of {', '.join(used_by)} (required when its `when:` "
                    f"filter matches): {_KEY_LIMITS}.",
                ),
            )
            continue
        properties[field] = _key_schema(
            settings.fields.get(field),
            f"Ordering key of {', '.join(used_by)}: messages with the same value are "
            f"delivered in the order they arrived; {_KEY_LIMITS}.",
        )
        if field not in required:
            required.append(field)
    if settings.id_field is not None:
        properties[settings.id_field] = _key_schema(
            settings.fields.get(settings.id_field),
            f"The message's dedup id when present and not null (it wins over a header); "
            f"{_KEY_LIMITS}.",
        )
    limits = [f"at most {settings.max_body} bytes (max_body)"]
    limits.append(f"nested at most {settings.max_depth} levels deep (max_depth)")
    if settings.max_string_length is not None:
        limits.append(
            f"no string (value or key) longer than {settings.max_string_length} "
            "characters (max_string_length)"
        )
    paths = ""
    if nested:
        paths = f" Nested values read as ordering keys: {', '.join(nested)}."
    return Schema(
        type=_OBJECT,
        required=required or None,
        properties=properties or None,
        additional_properties=True,
        description=(
            f"A JSON object, UTF-8, {', '.join(limits)}. Fields beyond the required ones "
            "pass through to the destinations untouched. The Content-Type is not checked." + paths
        ),
    )


def _header_param(name: str, description: str, schema: Schema, required: bool) -> Parameter:
    return Parameter(
        name=name, param_in="header", description=description, schema=schema, required=required
    )


def _token_scheme_name(header: str) -> str:
    """The security scheme of a route's `auth: {type: header}`: one per header
    name (components keys are [A-Za-z0-9._-]; a header name may hold more)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", header)
    if safe != header:
        safe += "-" + hashlib.sha256(header.encode()).hexdigest()[:8]
    return f"routeToken.{safe}"


def _auth_parameters(auth: Authenticator) -> list[Parameter]:
    if auth.type == "hmac-sha256":
        return [
            _header_param(
                auth.header_label,
                "`sha256=` and the hex HMAC-SHA256 of the raw body with the route's "
                "secret (as Meta/WhatsApp and GitHub sign).",
                Schema(type=_STRING, pattern="^sha256=[0-9a-fA-F]{64}$"),
                required=True,
            )
        ]
    if auth.type == "standard-webhooks":
        return [
            _header_param(
                "webhook-id",
                "Standard Webhooks message id; signed, and the message's dedup id "
                "(a provider's redelivery is a duplicate) unless the body's id field has one.",
                Schema(type=_STRING, min_length=1, max_length=MAX_KEY_LENGTH),
                required=True,
            ),
            _header_param(
                "webhook-timestamp",
                f"Unix time in seconds; within {STANDARD_WEBHOOKS_TOLERANCE} s of the "
                "router's clock.",
                Schema(type=_STRING, pattern="^[0-9]+$"),
                required=True,
            ),
            _header_param(
                "webhook-signature",
                "`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, several separated by "
                "spaces (Standard Webhooks).",
                Schema(type=_STRING),
                required=True,
            ),
        ]
    return []


def _trace_parameters() -> list[Parameter]:
    return [
        _header_param(
            "traceparent",
            "W3C Trace Context: kept with the message and sent unchanged on every "
            "delivery attempt. An invalid one is ignored, never refused.",
            Schema(
                type=_STRING, examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
            ),
            required=False,
        ),
        _header_param(
            "tracestate",
            f"Sent on with a valid traceparent; ignored past {MAX_TRACESTATE} characters.",
            Schema(type=_STRING),
            required=False,
        ),
    ]


def _refusal(call: Any, *args: Any) -> ApiError | None:
    """The error the router's own code raises for `call(*args)`, if any."""
    try:
        call(*args)
    except ApiError as exc:
        return exc
    return None


def _bad_request_example(ingest: IngestRoute) -> dict[str, Any]:
    empty: dict[str, Any] = {}
    error = (
        _refusal(ingest.parse, b"{}")
        or _refusal(ingest.targets, empty)
        or _refusal(ingest.parse, b"[]")
        or BadRequest("body must be a JSON object")  # not reached: [] is always refused
    )
    return _error_of(error)


def _unavailable_examples(ingest: IngestRoute, deadline: float) -> list[dict[str, Any]]:
    """A 503 with stored "no" (Redis refused: out of memory) and one with
    "unknown" (the write went out, no answer within the deadline)."""
    refused = ingest.unavailable(OutOfMemoryError("command not allowed when used memory"), deadline)
    sent = contextvars.copy_context()
    sent.run(command_written.set, True)
    lost = sent.run(ingest.unavailable, TimeoutError(), deadline)
    return [_error_of(refused), _error_of(lost)]


def _stored_answer(ingest: IngestRoute) -> OpenAPIResponse:
    """The 200: stored; on a route with `when:` filters, naming where."""
    example = "msg_1a2210d62071692a2cd6151b512"
    if not ingest.route.filters:
        return _answer(
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
    return _answer(
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


def _ingest_responses(ingest: IngestRoute, settings: Settings) -> dict[str, OpenAPIResponse]:
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
        "400": _answer(
            "Refused, nothing stored: invalid JSON or UTF-8 (with the byte offset), not an "
            "object, a missing or wrongly typed field, an empty or too long ordering key or "
            "dedup id, nesting deeper than max_depth, a string over max_string_length, an "
            "incomplete body, or malformed HTTP (then `Connection: close`).",
            ERROR_SCHEMA,
            _bad_request_example(ingest),
            _error("invalid JSON: input data was truncated"),
        ),
    }
    responses |= _no_match_answer(ingest)
    if ingest.auth is not None:
        missing = _refusal(ingest.auth.check, {}, b"")
        responses["401"] = _answer(
            f"The route's `auth` ({ingest.auth.type}) check failed; nothing stored.",
            ERROR_SCHEMA,
            *([_error_of(missing)] if missing is not None else []),
        )
    return responses


def _no_match_answer(ingest: IngestRoute) -> dict[str, OpenAPIResponse]:
    """The 422 of a route with `when:` filters and `on_no_match: reject`."""
    if not ingest.route.filters or ingest.route.settings.on_no_match != "reject":
        return {}
    return {
        "422": _answer(
            "The request is valid but a message matches no destination's `when:` filter "
            "(on_no_match: reject); nothing stored.",
            ERROR_SCHEMA,
            _error_of(NoMatch()),
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
    refused = _refusal(fmt.parse, _format_request(ingest, b"{}"))
    stored = {"id": "msg_1a2210d62071692a2cd6151b512", "duplicate": False}
    if ingest.route.filters:
        stored["destinations"] = [d.name for d in ingest.route.destinations]
    responses = {
        "200": _answer(
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
        "400": _answer(
            f"Refused, nothing stored: not a {fmt.name} webhook at all (invalid JSON or "
            "UTF-8, not the service's envelope), nesting deeper than max_depth, a string "
            "over max_string_length, an incomplete body, or malformed HTTP (then "
            "`Connection: close`).",
            ERROR_SCHEMA,
            *([_error_of(refused)] if refused is not None else []),
            _error("invalid JSON: input data was truncated"),
        ),
    }
    responses |= _no_match_answer(ingest)
    if fmt.authenticate is not None:
        missing = _refusal(fmt.authenticate, ingest.route.format_options, {}, b"")
        responses["401"] = _answer(
            f"The {fmt.name} signature check failed; nothing stored.",
            ERROR_SCHEMA,
            *([_error_of(missing)] if missing is not None else []),
        )
    return responses


def _shared_responses(
    ingest: IngestRoute, settings: Settings, responses: dict[str, OpenAPIResponse]
) -> dict[str, OpenAPIResponse]:
    """The answers every ingest route can give, after its own."""
    route = ingest.route.settings
    deadline = settings.ingest_deadline
    responses["408"] = _answer(
        f"The request's headers or body did not arrive within {settings.header_timeout:g} s "
        "(ROUTER_HEADER_TIMEOUT); nothing stored, the connection is closed.",
        ERROR_SCHEMA,
        _error(f"request body not received within {settings.header_timeout:g}s"),
        headers=_CLOSES,
    )
    responses["413"] = _answer(
        f"The body is over the route's max_body, {route.max_body} bytes; nothing stored.",
        ERROR_SCHEMA,
        _error(f"request body too large: the limit is {route.max_body} bytes"),
    )
    if route.rate_limit is not None:
        limit = route.rate_limit
        responses["429"] = _answer(
            f"The sender (by {limit.per}) is over the route's rate_limit, {limit.requests} "
            f"messages per {limit.period:g} s; nothing stored.",
            ERROR_SCHEMA,
            _error(
                f"rate limit: at most {limit.requests} messages per {limit.period:g}s "
                f"per {limit.per}"
            ),
            headers=_retry_after("Seconds until the sender's window ends."),
        )
    responses["503"] = _answer(
        "Redis could not store it within ROUTER_INGEST_DEADLINE "
        f"({deadline:g} s): unreachable, out of memory, or no answer; `stored` says whether "
        "that is certain. Also, without `stored`: the server had too many connections "
        "waiting for request headers and let this one go (`Connection: close`).",
        STORAGE_ERROR_SCHEMA,
        *_unavailable_examples(ingest, deadline),
        headers=_retry_after("Seconds to wait before retrying (1)."),
    )
    return responses


def _ingest_description(ingest: IngestRoute) -> str:
    route = ingest.route
    destinations = ", ".join(d.name for d in route.destinations)
    lines = [
        f"Stores the JSON object in the queue of every destination of this route "
        f"({destinations}) and answers 200 once Redis has it; any refusal stores nothing.",
    ]
    if route.filters:
        filtered = [d.name for d, f in zip(route.destinations, route.filters, strict=True) if f]
        lines[0] = (
            f"Stores the JSON object in the queue of every destination of this route "
            f"({destinations}) whose `when:` filter it matches ({', '.join(filtered)} have one; "
            "routes.yaml says which) and answers 200 once Redis has it, naming them; "
            "any refusal stores nothing."
        )
    if ingest.auth is not None and ingest.auth.type == "standard-webhooks":
        dedup = "the signed `webhook-id` header"
    else:
        dedup = "the `Idempotency-Key` header"
    if route.settings.id_field is not None:
        dedup = f"the body's `{route.settings.id_field}` field, else {dedup}"
    lines.append(
        f"Dedup: a message whose dedup id ({dedup}) was seen within "
        f"{route.settings.dedup_ttl:g} s (dedup_ttl) answers 200 with `duplicate: true` "
        "and the first id, and is not stored again."
    )
    if route.settings.rate_limit is not None:
        limit = route.settings.rate_limit
        lines.append(
            f"Rate limit: {limit.requests} messages per {limit.period:g} s per "
            + ("client address." if limit.per == "client" else f"value of `{limit.per}`.")
        )
    return "\n\n".join(lines)


# -- format routes: the service's webhook (router.plugin.formats) -----------------

_JSON_SCHEMA_LISTS = ("all_of", "any_of", "one_of", "prefix_items")
_JSON_SCHEMA_ONE = ("items", "additional_properties", "schema_not", "contains")
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def schema_of(spec: Mapping[str, Any]) -> Schema:
    """A JSON Schema written as plain dicts (a format's FormatDocs.body) as
    the spec objects this document is built from. An unknown keyword is a
    TypeError: the plugin's bug, found by its test of /schema."""
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        name = {"not": "schema_not"}.get(key) or _CAMEL_HUMP.sub("_", key).lower()
        if name in ("properties", "pattern_properties"):
            value = {k: schema_of(v) for k, v in value.items()}
        elif name in _JSON_SCHEMA_LISTS:
            value = [schema_of(v) for v in value]
        elif name in _JSON_SCHEMA_ONE and isinstance(value, Mapping):
            value = schema_of(value)
        elif name == "type":
            value = (
                [OpenAPIType(t) for t in value] if isinstance(value, list) else OpenAPIType(value)
            )
        fields[name] = value
    return Schema(**fields)


def _format_body(ingest: IngestRoute, fmt: IngestFormat) -> RequestBody:
    settings = ingest.route.settings
    limits = (
        f"At most {settings.max_body} bytes (max_body), nested at most {settings.max_depth} "
        "levels deep (max_depth)."
    )
    if fmt.docs is None:
        schema = Schema(
            type=_OBJECT,
            additional_properties=True,
            description=f"The {fmt.name} service's webhook, as it sends it. {limits}",
        )
        return RequestBody(required=True, content={_JSON: OpenAPIMediaType(schema=schema)})
    schema = schema_of(fmt.docs.body)
    schema.description = f"{schema.description or ''} {limits}".strip()
    example = dict(fmt.docs.example) if fmt.docs.example is not None else None
    return RequestBody(
        required=True,
        content={_JSON: OpenAPIMediaType(schema=schema, example=example)},
    )


def _format_description(ingest: IngestRoute, fmt: IngestFormat) -> str:
    route = ingest.route
    destinations = ", ".join(d.name for d in (*route.destinations, *route.format_destinations))
    return "\n\n".join(
        [
            f"A {fmt.name} webhook (`format: {fmt.name}`): {fmt.description}. Every message "
            f"it carries is stored on its own, for {destinations}, all in one step (or none), "
            "and listed in the answer in order; a malformed item is left out, counted in "
            "`skipped` and named in `problems`, the rest stored.",
            f"Dedup: by the service's own message id, within {route.settings.dedup_ttl:g} s "
            "(dedup_ttl): a redelivered webhook answers 200 with `duplicate: true` for what "
            "was stored before, and stores only what is new.",
        ]
    )


def verify_operation(ingest: IngestRoute) -> type[Operation]:
    """The Operation class of a format route's GET handshake (`verify`)."""
    fmt = ingest.format
    assert fmt is not None and fmt.verify is not None
    docs = fmt.docs
    parameters = [
        Parameter(
            name=name,
            param_in="query",
            description=description,
            schema=Schema(type=_STRING),
            required=True,
        )
        for name, description in (docs.verify_query if docs is not None else {}).items()
    ]
    description = (
        docs.verify_description
        if docs is not None and docs.verify_description
        else f"The {fmt.name} service's subscription check."
    )
    summary = f"Answer the {fmt.name} verification request"
    refused = _refusal(fmt.verify, ingest.route.format_options, {})
    responses = {
        "200": OpenAPIResponse(
            description="Verified: the challenge, as plain text.",
            content={"text/plain": OpenAPIMediaType(schema=Schema(type=_STRING))},
        ),
        "400": _answer(
            "A handshake without its challenge, or with one that is not a short token.",
            ERROR_SCHEMA,
        ),
        "403": _answer(
            "Refused: not a subscription, or not the route's verify token (never echoed).",
            ERROR_SCHEMA,
            *([_error_of(refused)] if refused is not None else []),
        ),
    }

    @dataclass
    class VerifyOperation(Operation):
        def __post_init__(self) -> None:
            self.tags = ["ingest"]
            self.summary = summary
            self.description = description
            self.parameters = list(parameters)
            self.responses = dict(responses)

    return VerifyOperation


def ingest_operation(ingest: IngestRoute, settings: Settings) -> type[Operation]:
    """The Operation class of an ingest route's handler (`operation_class=`)."""
    route = ingest.route.settings
    parameters: list[Parameter] = []
    fmt = ingest.format
    if fmt is not None:
        # The service's own headers (its signature); the dedup id is its message id.
        for header in fmt.docs.headers if fmt.docs is not None else ():
            parameters.append(
                _header_param(
                    header.name,
                    header.description,
                    Schema(type=_STRING, pattern=header.pattern),
                    required=header.required,
                )
            )
    elif ingest.auth is None or ingest.auth.type != "standard-webhooks":
        honoured = "Its value is the message's dedup id"
        if route.id_field is not None:
            honoured += f" when the body has no `{route.id_field}`"
        parameters.append(
            _header_param(
                "Idempotency-Key",
                f"{honoured}: a repeat within dedup_ttl answers 200 with duplicate: true "
                "and stores nothing. Send one to retry a 503 safely.",
                Schema(type=_STRING, min_length=1, max_length=MAX_KEY_LENGTH),
                required=False,
            )
        )
    if ingest.auth is not None:
        parameters += _auth_parameters(ingest.auth)
    parameters += _trace_parameters()
    security: list[SecurityRequirement] | None = None
    if ingest.auth is not None and ingest.auth.type == "header":
        security = [{_token_scheme_name(ingest.auth.header_label): []}]
    if fmt is not None:
        body = _format_body(ingest, fmt)
        description = _format_description(ingest, fmt)
    else:
        body = RequestBody(
            required=True,
            content={_JSON: OpenAPIMediaType(schema=_body_schema(ingest.route))},
        )
        description = _ingest_description(ingest)
    responses = _ingest_responses(ingest, settings)

    @dataclass
    class IngestOperation(Operation):
        def __post_init__(self) -> None:
            self.tags = ["ingest"]
            self.description = description
            self.parameters = list(parameters)
            self.request_body = body
            self.responses = dict(responses)
            self.security = security

    return IngestOperation


# -- health and admin ----------------------------------------------------------

_HEALTH: dict[str, tuple[str, dict[str, OpenAPIResponse]]] = {
    "healthz": (
        "Alive: the process answers HTTP. Asks nothing of Redis.",
        {
            "200": _answer(
                "Alive.",
                Schema(
                    type=_OBJECT, required=["status"], properties={"status": Schema(const="ok")}
                ),
                {"status": "ok"},
            )
        },
    ),
    "readyz": (
        "Ready: Redis answers within the ingest deadline, is not out of memory and does not "
        "evict queued messages, with ROUTER_REDIS_WAIT its replicas are in sync (a write's "
        "WAIT can succeed), and the delivery workers run (when this process runs them).",
        {
            "200": _answer(
                "Ready.",
                Schema(
                    type=_OBJECT,
                    required=["status", "redis"],
                    properties={
                        "status": Schema(const="ready"),
                        "redis": Schema(const="ok"),
                        "redis_mode": Schema(type=_STRING, enum=["single", "cluster"]),
                        "workers": Schema(const="running"),
                        "warnings": Schema(type=OpenAPIType.ARRAY, items=Schema(type=_STRING)),
                    },
                ),
                {"status": "ready", "redis": "ok", "redis_mode": "single", "workers": "running"},
            ),
            "503": _answer(
                "Not ready: `redis` says why (anything but ok), or `workers` is stopped. "
                "Not an error body: the same fields as when ready.",
                Schema(
                    type=_OBJECT,
                    required=["status", "redis"],
                    properties={
                        "status": Schema(const="not ready"),
                        "redis": Schema(type=_STRING),
                        "redis_mode": Schema(type=_STRING, enum=["single", "cluster"]),
                        "workers": Schema(type=_STRING, enum=["running", "stopped"]),
                        "warnings": Schema(type=OpenAPIType.ARRAY, items=Schema(type=_STRING)),
                    },
                ),
                {"status": "not ready", "redis": "Redis unreachable (Connection refused)"},
            ),
        },
    ),
}


def health_operation(name: str) -> type[Operation]:
    """The Operation class of the health endpoint `name` (healthz, readyz)."""
    description, responses = _HEALTH[name]

    @dataclass
    class HealthOperation(Operation):
        def __post_init__(self) -> None:
            self.tags = ["health"]
            self.description = description
            self.responses = dict(responses)

    return HealthOperation


_COUNT_RANGE = "count must be from 1 to 2147483647 (leave it out for all)"
_NO_DESTINATION = _error("no destination named 'crm'")

# The errors an admin endpoint may answer besides 401, 429 and 503, by the
# names its handler gives admin_operation (router/web/admin.py).
_ADMIN_ERRORS: dict[str, tuple[str, OpenAPIResponse]] = {
    "query": (
        "400",
        _answer(
            "A query parameter is not a whole number, or out of its range (start 0 to "
            "2147483647, count 1 to 2147483647).",
            ERROR_SCHEMA,
            _error("Validation failed for GET /admin/destinations/chatbot/dead?start=x"),
        ),
    ),
    "into": (
        "400",
        _answer(
            "A query parameter is out of its range (`count` 1 to 2147483647), or `into` "
            "(which orphan/move needs) names no destination of routes.yaml, or the one "
            "named in the path.",
            ERROR_SCHEMA,
            _error("into: no destination named 'crm' in routes.yaml"),
            _error(_COUNT_RANGE),
        ),
    ),
    "count": (
        "400",
        _answer(
            "`count` is not a whole number from 1 to 2147483647.",
            ERROR_SCHEMA,
            _error(_COUNT_RANGE),
        ),
    ),
    "keys": (
        "400",
        _answer(
            'The body is neither empty nor `{"keys": ["<ordering key>", ...]}` with a key.',
            ERROR_SCHEMA,
            _error('"keys" is empty: leave the body out to retry every key'),
        ),
    ),
    "key": (
        "400",
        _answer(
            "No `key` query parameter.",
            ERROR_SCHEMA,
            _error("Missing required query parameter 'key' for url .../key"),
        ),
    ),
    "unblock_body": (
        "400",
        _answer(
            'The body is not `{"key": "<ordering key>"}`.',
            ERROR_SCHEMA,
            _error(
                'send a JSON body {"key": "<ordering key>"}: Object missing required field `key`'
            ),
        ),
    ),
    "destination": (
        "404",
        _answer("No destination of that name in routes.yaml.", ERROR_SCHEMA, _NO_DESTINATION),
    ),
    "not_blocked": (
        "404",
        _answer(
            "No destination of that name, or the key is not blocked.",
            ERROR_SCHEMA,
            _NO_DESTINATION,
            _error("key '44912345678' of chatbot is not blocked"),
        ),
    ),
    "no_route": (
        "404",
        _answer(
            "No route with that path in routes.yaml.",
            ERROR_SCHEMA,
            _error("no route with path '/nowhere' in routes.yaml"),
        ),
    ),
    "no_format": (
        "409",
        _answer(
            "The route has no `format:` (a JSON route keeps no unroutable items).",
            ERROR_SCHEMA,
            _error("route /ingest has no `format:`: nothing to replay"),
        ),
    ),
    "conflict": (
        "409",
        _answer(
            "Replay without `into` of a destination no longer in routes.yaml (nothing "
            "would deliver it); orphan/move or orphan/purge of one still in it; or a move of "
            "the destination into another one did not finish (call that one again first).",
            ERROR_SCHEMA,
            _error(
                "slack is not in routes.yaml (orphaned): nothing would deliver its dead "
                "letters there; replay them into a configured destination with ?into=NAME, "
                "or purge them"
            ),
            _error(
                "a move of slack into chatbot did not finish (interrupted): run it again "
                "into chatbot first, or a message could be in both"
            ),
        ),
    ),
}

# Every admin endpoint's: the guard's two refusals, and Redis not answering.
_ADMIN_ALWAYS = {
    "401": _answer(
        "No `Authorization: Bearer <ROUTER_ADMIN_TOKEN>`, or another token.",
        ERROR_SCHEMA,
        _error("admin endpoints need Authorization: Bearer <ROUTER_ADMIN_TOKEN>"),
        headers={"WWW-Authenticate": _header("`Bearer`.", Schema(type=_STRING, const="Bearer"))},
    ),
    "429": _answer(
        "Too many wrong tokens from this client (its IP address): every attempt is refused "
        "until `Retry-After` seconds have passed, the right token too.",
        ERROR_SCHEMA,
        _error("too many wrong tokens from 203.0.113.9: try again in 4 s"),
        headers=_retry_after("Seconds until this client may try a token again."),
    ),
    "503": _answer(
        "Redis did not answer (unreachable, out of memory, timed out).",
        ERROR_SCHEMA,
        _error("Redis unreachable (Connection refused); retry later"),
        headers=_retry_after("Seconds to wait before retrying (1)."),
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
        media = {_JSON: OpenAPIMediaType(schema=schema)}
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


# -- the document and the docs page -------------------------------------------

_DESCRIPTION = """\
A webhook POSTs JSON messages to the ingest routes (from routes.yaml); the router \
stores each in Redis before it answers, and delivers them to their destinations in \
order per ordering key.

Every error body is JSON, `{"status": "error", "error": "<what is wrong>"}` (plus \
`stored` on a 503 of an ingest route), the HTTP server's own answers to malformed \
requests included. Any endpoint may also answer 500 `{"status": "error", "error": \
"internal error"}`: that is a bug, logged with its traceback. An unknown path \
answers 404, a wrong method 405.

The admin endpoints exist only when ROUTER_ADMIN_TOKEN is set, and need \
`Authorization: Bearer <ROUTER_ADMIN_TOKEN>`."""


def openapi_config(config: Config, admin: bool) -> OpenAPIConfig:
    """The app's OpenAPI configuration: the document's components (security
    schemes), its docs page and where both are served. `admin`: whether the
    admin endpoints exist (ROUTER_ADMIN_TOKEN is set)."""
    schemes: dict[str, Any] = {}
    if admin:
        schemes[ADMIN_SCHEME] = SecurityScheme(
            type="http",
            scheme="bearer",
            description="The value of ROUTER_ADMIN_TOKEN.",
        )
    for route in config.routes:
        auth = route.settings.auth
        if auth is not None and auth.type == "header":
            header = Authenticator(auth).header_label
            schemes[_token_scheme_name(header)] = SecurityScheme(
                type="apiKey",
                name=header,
                security_scheme_in="header",
                description=f"The secret of a route with auth type header, in {header}.",
            )
    tags = [
        Tag(name="ingest", description="The routes of routes.yaml: one message per POST."),
        Tag(name="health", description="For load balancers and orchestrators."),
    ]
    if admin:
        tags.append(Tag(name="admin", description="Queues, dead letters, blocked keys."))
    return OpenAPIConfig(
        title=TITLE,
        version=VERSION,
        description=_DESCRIPTION,
        path=DOCS_PATH,
        tags=tags,
        components=Components(security_schemes=schemes or None),
        render_plugins=[DocsPage(), JsonRenderPlugin(), YamlRenderPlugin()],
    )


class DocsPage(OpenAPIRenderPlugin):
    """Swagger UI at /schema (and /schema/swagger), from the package's own
    copy: the page references only the router's own URLs."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"], favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec_url = json.dumps(self.get_openapi_json_route(request))
        title = openapi_schema["info"]["title"]
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<style>body {{ margin: 0 }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: {spec_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
</script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        # Below the docs path: /schema and everything below it is the
        # router's own (config.RESERVED_PATHS).
        router.register(
            create_static_files_router(
                ASSETS_PATH.removeprefix(DOCS_PATH),
                directories=[ASSETS_DIR],
                name="docs-assets",
                include_in_schema=False,
            )
        )

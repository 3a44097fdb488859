"""What an ingest route's operation says in the OpenAPI document
(`operation_class=` of its handlers, router/web/app.py): the body it
requires (from routes.yaml; on a format route, the service's envelope from
the format's FormatDocs), the headers it honours, its description, and
every answer it can give (router/web/openapi/ingest_answers.py); and the GET
handshake of a format route with `verify`.

What Litestar derives from the handler's signature says little here: the
ingest handler reads its raw body itself (its checks are routes.yaml's, in
router/ingest/route.py), and every error goes through
router/http/errors.py, whose bodies are not Litestar's.

Decisions:
- Route auth is described by header name, never by value: the document
  holds no secret.
- A route with `auth: {type: header}` gets an apiKey security scheme (a
  client fills it in once, Swagger UI's "Authorize" included); the two
  signature types are header parameters instead, since a signature is
  computed per body and no security scheme can say so.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityRequirement,
)

from router.config import Route
from router.config.filters import is_nested
from router.config.settings import Settings
from router.http.auth import STANDARD_WEBHOOKS_TOLERANCE, Authenticator
from router.ingest.route import MAX_KEY_LENGTH, IngestRoute
from router.ingest.tracecontext import MAX_TRACESTATE
from router.plugin.formats import IngestFormat
from router.web.openapi.ingest_answers import ingest_responses
from router.web.openapi.parts import (
    ERROR_SCHEMA,
    JSON,
    answer,
    error_of,
    header_param,
    refusal,
    schema_of,
)

_STRING, _INTEGER, _OBJECT = OpenAPIType.STRING, OpenAPIType.INTEGER, OpenAPIType.OBJECT

# -- the body of a JSON route -----------------------------------------------------

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


# -- headers ---------------------------------------------------------------------


def token_scheme_name(header: str) -> str:
    """The security scheme of a route's `auth: {type: header}`: one per header
    name (components keys are [A-Za-z0-9._-]; a header name may hold more)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", header)
    if safe != header:
        safe += "-" + hashlib.sha256(header.encode()).hexdigest()[:8]
    return f"routeToken.{safe}"


def _auth_parameters(auth: Authenticator) -> list[Parameter]:
    if auth.type == "hmac-sha256":
        return [
            header_param(
                auth.header_label,
                "`sha256=` and the hex HMAC-SHA256 of the raw body with the route's "
                "secret (as Meta/WhatsApp and GitHub sign).",
                Schema(type=_STRING, pattern="^sha256=[0-9a-fA-F]{64}$"),
                required=True,
            )
        ]
    if auth.type == "standard-webhooks":
        return [
            header_param(
                "webhook-id",
                "Standard Webhooks message id; signed, and the message's dedup id "
                "(a provider's redelivery is a duplicate) unless the body's id field has one.",
                Schema(type=_STRING, min_length=1, max_length=MAX_KEY_LENGTH),
                required=True,
            ),
            header_param(
                "webhook-timestamp",
                f"Unix time in seconds; within {STANDARD_WEBHOOKS_TOLERANCE} s of the "
                "router's clock.",
                Schema(type=_STRING, pattern="^[0-9]+$"),
                required=True,
            ),
            header_param(
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
        header_param(
            "traceparent",
            "W3C Trace Context: kept with the message and sent unchanged on every "
            "delivery attempt. An invalid one is ignored, never refused.",
            Schema(
                type=_STRING, examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
            ),
            required=False,
        ),
        header_param(
            "tracestate",
            f"Sent on with a valid traceparent; ignored past {MAX_TRACESTATE} characters.",
            Schema(type=_STRING),
            required=False,
        ),
    ]


# -- the description of a JSON route ------------------------------------------------


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
        return RequestBody(required=True, content={JSON: OpenAPIMediaType(schema=schema)})
    schema = schema_of(fmt.docs.body)
    schema.description = f"{schema.description or ''} {limits}".strip()
    example = dict(fmt.docs.example) if fmt.docs.example is not None else None
    return RequestBody(
        required=True,
        content={fmt.docs.media_type: OpenAPIMediaType(schema=schema, example=example)},
    )


def _format_description(ingest: IngestRoute, fmt: IngestFormat) -> str:
    route = ingest.route
    destinations = ", ".join(d.name for d in (*route.destinations, *route.format_destinations))
    return "\n\n".join(
        [
            f"A {fmt.name} webhook (`format: {fmt.name}`): {fmt.description}. Every message "
            f"it carries is stored on its own, for {destinations}, all in one step (or none), "
            + (
                "and listed in the answer in order; a malformed item is left out, counted in "
                "`skipped` and named in `problems`, the rest stored."
                if fmt.answer is None
                else f"and answered as the {fmt.name} service expects (the 200 below); a "
                "malformed item is left out, logged and kept for `router unroutable`, the "
                "rest stored."
            ),
            f"Dedup: by the service's own message id, within {route.settings.dedup_ttl:g} s "
            + (
                "(dedup_ttl): a redelivered webhook answers 200 with `duplicate: true` for what "
                "was stored before, and stores only what is new."
                if fmt.answer is None
                else "(dedup_ttl): a redelivered webhook gets the same answer (the 200 below) "
                "and stores only what is new, nothing again of what was stored before."
            ),
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
    refused = refusal(fmt.verify, ingest.route.format_options, {})
    responses = {
        "200": OpenAPIResponse(
            description="Verified: the challenge, as plain text.",
            content={"text/plain": OpenAPIMediaType(schema=Schema(type=_STRING))},
        ),
        "400": answer(
            "A handshake without its challenge, or with one that is not a short token.",
            ERROR_SCHEMA,
        ),
        "403": answer(
            "Refused: not a subscription, or not the route's verify token (never echoed).",
            ERROR_SCHEMA,
            *([error_of(refused)] if refused is not None else []),
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


# -- the operation ---------------------------------------------------------------


def ingest_operation(ingest: IngestRoute, settings: Settings) -> type[Operation]:
    """The Operation class of an ingest route's handler (`operation_class=`)."""
    route = ingest.route.settings
    parameters: list[Parameter] = []
    fmt = ingest.format
    if fmt is not None:
        # The service's own headers (its signature); the dedup id is its message id.
        for header in fmt.docs.headers if fmt.docs is not None else ():
            parameters.append(
                header_param(
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
            header_param(
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
        security = [{token_scheme_name(ingest.auth.header_label): []}]
    if fmt is not None:
        body = _format_body(ingest, fmt)
        description = _format_description(ingest, fmt)
    else:
        body = RequestBody(
            required=True,
            content={JSON: OpenAPIMediaType(schema=_body_schema(ingest.route))},
        )
        description = _ingest_description(ingest)
    responses = ingest_responses(ingest, settings)

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

"""The parts the OpenAPI document's operations are built from
(router/web/openapi/document.py assembles it): the error body every error answer
has, an answer with its examples, a header, a header parameter, the error
the router's own code gives for a call (so examples use its words), and a
JSON Schema written as plain dicts turned into the spec objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    Reference,
    Schema,
)

from router.http.errors import ApiError

JSON = "application/json"
_STRING, _INTEGER, _OBJECT = OpenAPIType.STRING, OpenAPIType.INTEGER, OpenAPIType.OBJECT

ERROR_SCHEMA = Schema(
    type=_OBJECT,
    required=["status", "error"],
    properties={
        "status": Schema(const="error"),
        "error": Schema(type=_STRING, description="What is wrong, in words; names no secret."),
    },
    description='Every error body: `{"status": "error", "error": "<what is wrong>"}`.',
)


def header(description: str, schema: Schema) -> OpenAPIHeader:
    return OpenAPIHeader(description=description, schema=schema, required=True)


def retry_after(description: str) -> dict[str, OpenAPIHeader | Reference]:
    return {"Retry-After": header(description, Schema(type=_INTEGER, minimum=1))}


def _examples(*bodies: dict[str, Any]) -> dict[str, Example | Reference]:
    return {f"example{i + 1}": Example(value=body) for i, body in enumerate(bodies)}


def answer(
    description: str,
    schema: Schema = ERROR_SCHEMA,
    *examples: dict[str, Any],
    headers: dict[str, OpenAPIHeader | Reference] | None = None,
) -> OpenAPIResponse:
    media = OpenAPIMediaType(schema=schema, examples=_examples(*examples) if examples else None)
    return OpenAPIResponse(description=description, headers=headers, content={JSON: media})


def error_of(error: ApiError) -> dict[str, Any]:
    """The body the router answers for `error` (router.http.errors)."""
    return {"status": "error", "error": error.message, **error.extra}


def error_body(message: str) -> dict[str, Any]:
    return {"status": "error", "error": message}


def header_param(name: str, description: str, schema: Schema, required: bool) -> Parameter:
    return Parameter(
        name=name, param_in="header", description=description, schema=schema, required=required
    )


def refusal(call: Any, *args: Any) -> ApiError | None:
    """The error the router's own code raises for `call(*args)`, if any."""
    try:
        call(*args)
    except ApiError as exc:
        return exc
    return None


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

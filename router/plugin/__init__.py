"""The public plugin API: everything a router plugin may import.

A plugin (a delivery sink or an ingest format, docs/plugins.md) imports
from this module only::

    from router.plugin import DeliveryFailed, SinkContext, SinkType, hookimpl

This is the stable surface. What may change here: names are added;
dataclasses (``Delivery``, ``SinkContext``, ``SinkType``, ``IngestFormat``,
``FormatRequest``, ...) gain fields with defaults; exceptions gain keyword
arguments with defaults; the texts of errors change. A plugin that builds
these types with keyword arguments and reads only the documented fields
keeps working. A name is removed or changed in an incompatible way only
in a release that says so in docs/plugins.md.

Everything else in the ``router`` package is private: its modules are
moved, renamed and split without notice (the names below are re-exported
from the modules that own them today; import them from here, never from
there). tests/unit/test_plugin_api.py keeps the shipped plugins
(plugins/ and tests/thirdparty_plugin) to this module.
"""

from __future__ import annotations

from router.ops.redaction import Redactor
from router.plugin.formats import (
    MAX_KEY_LENGTH,
    FormatAnswer,
    FormatDocs,
    FormatHeader,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    SkippedItem,
)
from router.plugin.hookspecs import hookimpl
from router.plugin.http_sink import MAX_ANSWER_BYTES, HttpOptions, HttpSink
from router.plugin.refusal import ApiError, BadRequest, Unauthorized
from router.plugin.sinks import (
    Delivery,
    DeliveryFailed,
    DeliveryResponse,
    NoOptions,
    OptionError,
    Sink,
    SinkContext,
    SinkType,
)

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_KEY_LENGTH",
    "ApiError",
    "BadRequest",
    "Delivery",
    "DeliveryFailed",
    "DeliveryResponse",
    "FormatAnswer",
    "FormatDocs",
    "FormatHeader",
    "FormatRequest",
    "HttpOptions",
    "HttpSink",
    "IngestFormat",
    "IngestedMessage",
    "NoOptions",
    "OptionError",
    "Redactor",
    "Sink",
    "SinkContext",
    "SinkType",
    "SkippedItem",
    "Unauthorized",
    "hookimpl",
]

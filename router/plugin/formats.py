"""What an ingest-format plugin implements: a service's own webhook shape.

A route's `format:` (routes.yaml) names how its requests are read. Without
one, a route takes one JSON object per POST and stores it as it came (the
router's own behaviour, router.ingest.route). A format turns a service's webhook
(WhatsApp Cloud API: router_whatsapp) into the messages it carries:

- ``authenticate(options, headers, body)`` checks the request is the
  service's (a signature over the raw body) before anything is parsed; it
  raises ``router.plugin.Unauthorized`` (401) to refuse.
- ``parse(request)`` returns the messages of one request, each with its own
  body, ordering key, dedup id and destinations. All of them are stored in
  one atomic step (router.queue.enqueue.enqueue_many), or none is. It raises
  ``router.plugin.BadRequest`` (400) naming what is wrong when the request
  is not the service's webhook at all; a refused request stores nothing.
  One malformed item in a good request (a message without its id) is
  ``request.skip(reason, problem)``-ed instead: the others are stored, the
  answer is 200 and says how many were skipped, and the router logs each
  skipped item, counts it (router_ingest_items_skipped_total{route,
  reason}) and keeps it, with the reason, for the operator to read, replay
  or purge (router.queue.unroutable; stored before the answer: a failure to keep
  it is a 503). A service that redelivers a refused request (Meta does, for
  days) would otherwise never get the good items through.
- ``verify(options, query)`` answers the service's GET handshake (a
  subscription check): it returns the plain-text answer, or raises an
  ``ApiError`` (403). None: GET answers 405, as on a JSON route.
- ``destinations(options)`` names the destinations the options send
  messages to besides the route's `destinations:` (WhatsApp's statuses);
  the config check refuses a name that is not defined.
- ``answer(options)`` (optional) is the body and content type of the 200
  once a request is stored, a ``FormatAnswer``: what the service expects
  back (Twilio: an empty TwiML document). None: the router's JSON answer
  listing the stored messages. Refusals (4xx, 503) stay the router's JSON.
- ``docs`` (optional, a ``FormatDocs``) is what the OpenAPI document
  (/schema, router.web.openapi.ingest) says about such a route: the service's POST
  body as a JSON Schema, the headers the format reads (its signature), the
  GET handshake's query parameters. Without it the document says only
  that the body is the service's JSON.

Registered through the hook ``router_ingest_formats`` (router.plugin.hookspecs).
A plugin imports these types, and the errors above, from router.plugin
(the public API, docs/plugins.md), never from here: this module may move.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.plugin.sinks import NoOptions

# The longest conversation key (ordering key) a message may have, in
# characters: longer ones are refused with a 400.
MAX_KEY_LENGTH = 256


@dataclass(frozen=True, slots=True)
class IngestedMessage:
    """One message a request carries, as it is to be stored."""

    body: bytes  # what its destinations receive (JSON, by convention)
    # Its conversation: destinations with an `ordering_key` deliver the
    # messages of one value in order; destinations without one keep one
    # global order, as on a JSON route.
    ordering_key: str
    # The service's id of the message: a repeat within the route's
    # dedup_ttl is a duplicate (stored once). None: never a duplicate.
    dedup_id: str | None = None
    # Names of the destinations it goes to: None means the route's
    # `destinations:`; () stores it nowhere (dropped).
    destinations: tuple[str, ...] | None = None
    # Where it is in the request, for an error that names it (e.g.
    # "entry[0].changes[0].value.messages[2]"); None: its place in parse's list.
    where: str | None = None


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """One item of a request that parse left out."""

    # A metric label: a short name from a small fixed set per format (never
    # a value from the request), e.g. "message.from".
    reason: str
    # What is wrong and where, for the log and the answer, e.g.
    # "entry[0].changes[0].value.messages[1].from must be a non-empty string".
    problem: str
    # The item as the request carried it (decoded JSON), kept for the
    # operator (router.queue.unroutable): the router answered 200 for it.
    item: Any = None
    # A request carrying only this item, as the service would send it:
    # what a replay parses again once the router understands it (`router
    # unroutable replay`). None: the item cannot be replayed, only read.
    replay_body: bytes | None = None


@dataclass(frozen=True, slots=True)
class FormatRequest:
    """A request as a format's `parse` sees it (authenticated already)."""

    body: bytes
    headers: Mapping[str, str]
    options: Any  # an instance of the format's options Struct
    # router.ingest.route.decode_object with the route's limits (max_body,
    # max_depth, max_string_length), given by the router.
    decode: Callable[[bytes], dict[str, Any]] = field(repr=False)

    # What parse skipped (skip()), in the request's order.
    skipped: list[SkippedItem] = field(default_factory=list, repr=False)

    def skip(
        self, reason: str, problem: str, item: Any = None, replay_body: bytes | None = None
    ) -> None:
        """Leave one malformed item of the request out (see the module's
        text): `item` as it came, and `replay_body` (a request with only
        it) are kept for the operator."""
        self.skipped.append(SkippedItem(reason, problem, item, replay_body))

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, with the route's limits and the same
        400s naming the problem as a JSON route (invalid JSON with its byte
        offset, not an object, nested too deep, a string too long)."""
        return self.decode(self.body)


@dataclass(frozen=True, slots=True)
class FormatHeader:
    """A request header a format reads (e.g. its signature), for /schema."""

    name: str  # as the service writes it, e.g. "X-Hub-Signature-256"
    description: str
    pattern: str | None = None  # a regular expression its value matches
    required: bool = True


@dataclass(frozen=True, slots=True)
class FormatAnswer:
    """The 200 a format's route answers once a request is stored, instead
    of the router's JSON (IngestFormat.answer)."""

    body: bytes
    media_type: str = "application/json"  # the answer's Content-Type


@dataclass(frozen=True, slots=True)
class FormatDocs:
    """What the OpenAPI document says about a format's route (router.web.openapi.ingest)."""

    # The POST body as the service sends it: a JSON Schema (2020-12, as
    # OpenAPI 3.1 takes it), plain dicts and lists.
    body: Mapping[str, Any]
    # One body as the service sends it, shown as the request's example.
    example: Mapping[str, Any] | None = None
    headers: tuple[FormatHeader, ...] = ()
    # The GET handshake's query parameters (`verify`): name -> description.
    verify_query: Mapping[str, str] = field(default_factory=dict)
    # The handshake in words (what it checks, what it answers).
    verify_description: str = ""
    # The POST body's content type (the schema above describes its fields
    # then, e.g. a form's names and values).
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class IngestFormat:
    name: str  # what a route's `format:` refers to
    parse: Callable[[FormatRequest], list[IngestedMessage]]
    # The route's `format_options:` are validated against it at load (as a
    # destination's options are against its plugin's).
    options: type[msgspec.Struct] = NoOptions
    authenticate: Callable[[Any, Mapping[str, str], bytes], None] | None = None
    verify: Callable[[Any, Mapping[str, str]], str] | None = None
    destinations: Callable[[Any], list[str]] = field(default=lambda options: [])
    description: str = ""
    docs: FormatDocs | None = None
    # The 200's body once a request is stored; None: the router's JSON.
    answer: Callable[[Any], FormatAnswer] | None = None

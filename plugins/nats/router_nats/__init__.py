"""The nats destination: publish each message to a NATS subject (docs/nats.md).

With a JetStream stream capturing the subject, the message is published to
JetStream and the stream's publish ack (PubAck) acknowledges it; its
``Nats-Msg-Id`` is the message id, so the stream's duplicate window drops a
redelivery. Without a stream, a core publish followed by a marker to the
connection's own inbox acknowledges it once the marker comes back (the
server processes a connection's messages in order: it has processed the
message). A message over the server's max_payload (headers included) fails
at once, as permanent. Which one is
the ``jetstream`` option's: ``auto`` (the default) asks the server which
stream captures the subject (the answer kept for a few seconds), ``true``
requires a stream (none fails the attempt), ``false`` always publishes to
core NATS.

The subject is the ``subject`` template with ``{key}`` replaced by the
ordering key, escaped to one subject token: ASCII letters, digits, ``-`` and
``_`` stay; every other character (``.``, ``*``, ``>``, spaces, ``%``,
anything non-ASCII) becomes ``%XX`` per byte of its UTF-8 (``*``, the key of
a destination with one global order, is ``%2A``).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING

import msgspec

from router.plugin import OptionError, SinkContext, SinkType, hookimpl

if TYPE_CHECKING:
    from router_nats.sink import NatsSink

_SAFE = re.compile(r"[A-Za-z0-9_-]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SCHEMES = ("nats", "tls")


def escape_token(key: str) -> str:
    """The ordering key as one NATS subject token: letters, digits, `-`
    and `_` as they are, every other character as `%XX` per UTF-8 byte."""
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in key
    )


def _check_subject(subject: str) -> None:
    for name in _PLACEHOLDER.findall(subject):
        if name != "key":
            raise OptionError(("subject",), f"unknown placeholder {{{name}}}: only {{key}}")
    literal = subject.replace("{key}", "k")
    if "{" in literal or "}" in literal:
        raise OptionError(("subject",), "a stray { or }: the only placeholder is {key}")
    if any(c.isspace() for c in literal):
        raise OptionError(("subject",), "a NATS subject has no whitespace")
    for token in literal.split("."):
        if not token:
            raise OptionError(("subject",), f"empty token in subject {subject!r}")
        if token in ("*", ">") or "*" in token or ">" in token:
            raise OptionError(
                ("subject",), "wildcards (* and >) subscribe; a subject to publish has none"
            )


class NatsOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    subject: str = "router.{key}"
    # auto: JetStream where a stream captures the subject, core NATS elsewhere;
    # true: a stream is required; false: core NATS only.
    jetstream: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.jetstream not in (True, False, "auto"):
            raise OptionError(("jetstream",), "jetstream is auto, true or false")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise OptionError(("url",), "a NATS server URL: nats://host:4222 (or tls://host:4222)")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise OptionError(("url",), "the port of url is not a number") from None
        _check_subject(self.subject)

    def secret_values(self) -> list[str]:
        parts = urllib.parse.urlsplit(self.url)
        return [v for v in (parts.password, parts.username if not parts.password else None) if v]

    @property
    def url_shown(self) -> str:
        """The server's address without credentials, for failure reasons."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"

    def subject_for(self, key: str) -> str:
        token = key if key.isascii() and key.isalnum() else escape_token(key)
        return self.subject.replace("{key}", token)


def make_sink(options: NatsOptions, context: SinkContext) -> NatsSink:
    # nats-py is imported here, by a process that delivers to NATS, not by
    # every router process (its import takes a third of a second).
    from router_nats.sink import NatsSink

    return NatsSink(options, context)


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="nats",
            factory=make_sink,
            options=NatsOptions,
            circuit_breaker=True,
            description=(
                "publish each message to a NATS subject; JetStream's PubAck (or a "
                "core publish the server confirmed processing) acknowledges it"
            ),
        )
    ]

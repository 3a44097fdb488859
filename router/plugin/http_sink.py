"""A sink that sends the message to a URL: the built-in ``http`` plugin, and
the base the chatbot plugin (and any HTTP plugin) builds on.

Its options (docs/outbound-webhooks.md): `url`, `method` (POST, PUT or
PATCH), `headers` (values may use ${VAR}), `id_header`, `success_statuses`
(default any 2xx), `signing` (Standard Webhooks) and `body` (a reshaping of
the JSON sent; router.plugin.reshape). Without `body` the message's bytes go out
exactly as they were received.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import socket
import time
from typing import Any, ClassVar, Literal

import httpx
import msgspec

from router.ops import redaction
from router.ops.redaction import Redactor
from router.plugin import standard_webhooks
from router.plugin.client import USER_AGENT, direct_transport
from router.plugin.reshape import Template, compile_template, render
from router.plugin.sinks import (
    Delivery,
    DeliveryFailed,
    DeliveryResponse,
    OptionError,
    SinkContext,
)
from router.plugin.status_codes import Ranges, StatusSpecError, matches, parse_statuses

# Methods a delivery may use: each sends the message as its body. GET, HEAD,
# DELETE and OPTIONS carry no body in practice (RFC 9110 gives a body on them
# no meaning; servers and proxies drop or refuse it), so they are refused.
METHODS = ("POST", "PUT", "PATCH")

# RFC 9110 token: what a header name may be.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# A header value: visible ASCII characters, spaces and tabs (inside it); no
# CR, LF, NUL or other control characters, which would split or end it.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Set by the HTTP client from the request itself; a configured one would
# contradict it (a wrong Content-Length) or smuggle a second request.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})
# What the router sets on every delivery (x-router-coalesced: a coalesced one).
_ROUTER_HEADERS = ("x-router-attempt", "x-router-sequence", "x-router-coalesced")
_SIGNING_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SigningOptions(msgspec.Struct, forbid_unknown_fields=True):
    # standard-webhooks: webhook-id (the message id: the same on every
    # retry), webhook-timestamp (of each attempt) and webhook-signature
    # (v1,<base64 HMAC-SHA256 of "id.timestamp.body">) per standardwebhooks.com.
    type: Literal["standard-webhooks"]
    secret: str  # whsec_<base64>, from ${VAR}; never logged or shown


def parse_success_statuses(spec: list[int | str]) -> Ranges:
    """`success_statuses` as (lowest, highest) ranges: each item a code
    (200), a range ("200-299") or a class ("2xx"). Raises OptionError."""
    if not spec:
        raise OptionError(
            ("success_statuses",), "list at least one status, or leave it out for any 2xx"
        )
    try:
        return parse_statuses(spec)
    except StatusSpecError as exc:
        raise OptionError(("success_statuses", exc.index), exc.message) from None


class HttpOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    headers: dict[str, str] = {}
    # Header carrying the message id, the same on every retry so the
    # destination can drop redeliveries (the IETF Idempotency-Key draft).
    id_header: str = "Idempotency-Key"
    method: str = "POST"  # or PUT, PATCH (any case)
    # What acknowledges a message; None: any 2xx. Anything else (a 3xx too:
    # redirects are not followed) fails the attempt, which is retried.
    success_statuses: list[int | str] | None = None
    signing: SigningOptions | None = None
    # The JSON sent, built from the message (router.plugin.reshape); None: the
    # message's bytes exactly as received.
    body: Any = None

    # Spaces and control characters: httpx would quietly percent-encode some
    # (even in the host) and refuse others only at the first delivery.
    _UNSAFE_CHARACTERS: ClassVar[re.Pattern[str]] = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
    # Where cloud machines answer with their credentials (AWS, GCP, Azure,
    # ...): a destination there sends messages to the machine's metadata
    # service, the usual aim of server-side request forgery.
    _METADATA_HOSTS: ClassVar[frozenset[str]] = frozenset({"metadata.google.internal", "metadata"})
    _METADATA_ADDRESSES: ClassVar[frozenset[ipaddress.IPv6Address]] = frozenset(
        {ipaddress.IPv6Address("fd00:ec2::254")}  # AWS's IPv6 metadata address
    )

    def __post_init__(self) -> None:
        # Checked when routes.yaml loads (msgspec reports it as a config
        # error), not first when a worker builds the sink.
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self._UNSAFE_CHARACTERS.search(self.url):
            raise ValueError(
                f"url {self.url!r} contains a space or control character; "
                "percent-encode it (a space is %20)"
            )
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"url {self.url!r} is not a valid URL: {exc}") from None
        if not url.host:
            raise ValueError(f"url {self.url!r} names no host; write http://host[:port]/path")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(f"url {self.url!r}: a port is a number from 1 to 65535")
        self.method = self.method.upper()
        if self.method not in METHODS:
            raise OptionError(("method",), self._method_problem())
        self._check_headers()
        if self.success_statuses is not None:
            parse_success_statuses(self.success_statuses)
        if self.signing is not None:
            try:
                standard_webhooks.secret_key(self.signing.secret)
            except ValueError as exc:  # its text never holds the secret
                raise OptionError(("signing", "secret"), str(exc)) from None
        if self.body is not None:
            compile_template(self.body)

    def _method_problem(self) -> str:
        fix = "use POST (the default), PUT or PATCH"
        if self.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return f"{self.method} sends no body, and a delivery always sends the message; {fix}"
        return f"{self.method!r} is not a method the router sends; {fix}"

    def _check_headers(self) -> None:
        """Header names are tokens, values hold no line break or control
        character, and none contradicts what the router sets. The errors
        name the header, never its value (often a secret)."""
        if not _TOKEN.match(self.id_header):
            raise OptionError(("id_header",), f"{self.id_header!r} is not a header name")
        if self.id_header.lower() in _ROUTER_HEADERS:
            raise OptionError(
                ("id_header",),
                f"the router sets {self.id_header} on every delivery; name another header",
            )
        seen: dict[str, str] = {}
        for name, value in self.headers.items():
            where = ("headers", name)
            lower = name.lower()
            if not _TOKEN.match(name):
                raise OptionError(
                    where, "not a header name: letters, digits and !#$%&'*+-.^_`|~ only"
                )
            if lower in seen:
                raise OptionError(
                    where, f"given twice (as {seen[lower]!r} too): header names ignore case"
                )
            seen[lower] = name
            if _BAD_VALUE.search(value):
                raise OptionError(
                    where,
                    "the value holds a line break or control character (a secret file's "
                    "trailing newline?); remove it",
                )
            if value != value.strip(" \t"):
                # httpx's h11 refuses such a value at every delivery, in an
                # error that quotes it.
                raise OptionError(where, "the value starts or ends with a space or tab; remove it")
            if not value.isascii():
                raise OptionError(
                    where,
                    "the value holds a character outside ASCII, which HTTP headers cannot "
                    "carry as text; percent- or base64-encode it",
                )
            if lower in _FRAMING_HEADERS:
                raise OptionError(where, "the HTTP client sets it from the request; remove it")
            if lower == self.id_header.lower() or lower in _ROUTER_HEADERS:
                raise OptionError(
                    where, "the router sets it on every delivery (see id_header); remove it"
                )
            if self.signing is not None and lower in _SIGNING_HEADERS:
                raise OptionError(where, "signing: sets it on every delivery; remove it")

    def __repr__(self) -> str:
        # Header values and the signing secret stay out of every repr
        # (a log line, a traceback's locals, a debugger).
        headers = dict.fromkeys(self.headers, "***")
        signing = None if self.signing is None else f"{self.signing.type} (secret ***)"
        return (
            f"{type(self).__name__}(url={self.url!r}, method={self.method!r}, "
            f"headers={headers!r}, id_header={self.id_header!r}, "
            f"success_statuses={self.success_statuses!r}, signing={signing!r}, "
            f"body={self.body!r})"
        )

    def secret_values(self) -> list[str]:
        """What must never appear in a text the router shows (a failure
        reason): every header value and its part after an auth scheme
        ("Bearer <token>"), the signing secret (with and without whsec_),
        the URL's password and the `user:password` of its Basic auth.
        Every form of them is starred out (router.ops.redaction)."""
        found = []
        for value in self.headers.values():
            found += [value.strip(), value.strip().partition(" ")[2].strip()]
        if self.signing is not None:
            secret = self.signing.secret
            found += [secret, secret.removeprefix(standard_webhooks.SECRET_PREFIX)]
        return found + redaction.userinfo_secrets(self.url)

    def config_warnings(self) -> list[str]:
        """What routes.yaml should know about these options: each "option: what"."""
        warnings = []
        address = self._metadata_address(httpx.URL(self.url).host)
        if address is not None:
            warnings.append(
                f"url: {self.url!r} points at {address}, a link-local or cloud metadata "
                "address (where a cloud machine serves its own credentials); "
                "make sure this destination is meant"
            )
        if self.signing is not None:
            size = len(standard_webhooks.secret_key(self.signing.secret))
            if size < standard_webhooks.MIN_KEY_BYTES:
                warnings.append(
                    f"signing: the secret's key is {size} bytes; Standard Webhooks asks for "
                    "24 to 64 random bytes (whsec_ and their base64)"
                )
        return warnings

    @classmethod
    def _metadata_address(cls, host: str) -> str | None:
        """`host` named as it connects when it is a link-local or cloud
        metadata address (numeric forms as the resolver reads them:
        2852039166 and 0xa9fea9fe are 169.254.169.254), else None."""
        name = host.lower().rstrip(".")
        if name in cls._METADATA_HOSTS:
            return name
        try:
            ip = ipaddress.ip_address(name.partition("%")[0])  # without an IPv6 zone
        except ValueError:
            try:  # the forms inet_aton (and so getaddrinfo) accepts
                ip = ipaddress.IPv4Address(socket.inet_aton(name))
            except OSError:
                return None  # a DNS name: what it resolves to is not known here
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip in cls._METADATA_ADDRESSES:
            return str(ip)
        return None


# delta-seconds (RFC 9110: digits; a decimal fraction is tolerated).
_DELTA_SECONDS = re.compile(r"^\d{1,12}(?:\.\d{1,9})?$")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date);
    None when absent or unparsable (negative, NaN, words), so it is ignored.
    A date in the past gives 0."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# How much of a destination's answer is read: enough to judge it (a JSON
# status, an error text). The rest is never read, so one huge answer costs
# no memory and no time; the connection is closed instead of reused.
MAX_ANSWER_BYTES = 64 * 1024

# Headers that describe the whole body on the wire, not the prefix kept.
_WIRE_HEADERS = (b"content-length", b"content-encoding", b"transfer-encoding")


class HttpSink:
    """Send the message (as received, or reshaped by `body:`) with `method`;
    a 2xx, or a status in `success_statuses`, acknowledges it."""

    def __init__(self, options: HttpOptions, context: SinkContext) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")
        self.options = options
        self.context = context
        self.http = context.http
        self.method = options.method.upper()
        self._request = httpx.Request(self.method, options.url)  # what answers refer to
        # Whether a subclass judges answers with its own check(response).
        self._checks_response = type(self).check is not HttpSink.check
        # Under the router's aiohttp transport the request goes to it directly
        # (router.plugin.aiohttp_transport.AiohttpTransport.poster).
        direct = direct_transport(context.http)
        self._direct = None if direct is None else direct.poster(self._request)
        self._headers = {
            "content-type": "application/json",
            # Uncompressed answers: a small compressed one must not expand
            # past MAX_ANSWER_BYTES in memory.
            "accept-encoding": "identity",
            "user-agent": USER_AGENT,
            **{k.lower(): v for k, v in options.headers.items()},
        }
        self._statuses = (
            None
            if options.success_statuses is None
            else parse_success_statuses(options.success_statuses)
        )
        self._template: Template | None = (
            None if options.body is None else compile_template(options.body)
        )
        self._signing_key = (
            None
            if options.signing is None
            else standard_webhooks.secret_key(options.signing.secret)
        )
        # The destination's redactor (router.config built it from these
        # options and the ${VAR}s in them); one of the options' own secrets
        # when the sink is built without it.
        self._redactor = context.redactor or Redactor(options.secret_values())

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        try:
            return await self._deliver(delivery)
        except DeliveryFailed as exc:
            # The reason is logged and kept with the message (router status,
            # dead letters): a destination echoing the request's headers in
            # its answer must not put a configured secret there.
            reason = self._redact(exc.reason)
            if reason != exc.reason:
                exc.reason = reason
                exc.args = (reason,)
            raise

    async def _deliver(self, delivery: Delivery) -> DeliveryResponse:
        body = delivery.body
        if self._template is not None:
            if delivery.coalesced:
                # Each message of a coalesced request through the template.
                body = b"[%s]" % b",".join(
                    render(self._template, m.body) for m in delivery.coalesced
                )
            else:
                body = render(self._template, delivery.body)
        request_id = delivery.request_id if delivery.coalesced else delivery.id
        headers = {
            **self._headers,
            self.options.id_header.lower(): request_id,  # (header names lower-cased: one of each)
            "x-router-attempt": str(delivery.attempt),
        }
        if delivery.sequence is not None:
            headers["x-router-sequence"] = str(delivery.sequence)
        if delivery.coalesced:
            headers["x-router-coalesced"] = str(len(delivery.coalesced))
        if delivery.traceparent is not None:
            headers["traceparent"] = delivery.traceparent
            if delivery.tracestate is not None:
                headers["tracestate"] = delivery.tracestate
        if self._signing_key is not None:
            # The same webhook-id on every retry (the destination's dedup
            # key); a timestamp of this attempt, so a retry after minutes
            # still falls within the receiver's tolerance (5 minutes).
            timestamp = str(int(time.time()))
            headers["webhook-id"] = request_id
            headers["webhook-timestamp"] = timestamp
            headers["webhook-signature"] = standard_webhooks.sign(
                self._signing_key, request_id, timestamp, body
            )
        timeout = self.context.timeout
        try:
            if self._direct is not None:
                status, raw_headers, prefix = await self._direct(
                    body, headers, timeout, MAX_ANSWER_BYTES
                )
            else:
                async with self.http.stream(
                    self.method,
                    self.options.url,
                    content=body,
                    headers=headers,
                    timeout=timeout,
                ) as streamed:
                    prefix = await _read_prefix(streamed, MAX_ANSWER_BYTES)
                status, raw_headers = streamed.status_code, streamed.headers.raw
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"timed out after {timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if self._checks_response or not self.accepts(status):
            # A subclass's own check, or a failure to describe: the answer
            # as an httpx.Response (about 20 µs to build: not for every
            # accepted answer).
            kept = [(k, v) for k, v in raw_headers if k.lower() not in _WIRE_HEADERS]
            self.check(httpx.Response(status, headers=kept, content=prefix, request=self._request))
        else:
            self.check_body(status, prefix)
        return DeliveryResponse(status, prefix)

    def accepts(self, status: int) -> bool:
        """Whether `status` acknowledges a message: a 2xx, or one of
        `success_statuses` when they are set."""
        if self._statuses is None:
            return 200 <= status <= 299
        return matches(self._statuses, status)

    def check_body(self, status: int, body: bytes) -> None:
        """Raise DeliveryFailed if an answer whose status acknowledges the
        message says otherwise in its body (`body`: at most
        MAX_ANSWER_BYTES of it). The base one accepts any body.

        The cheaper hook for a subclass (no response object is built for
        it); `check` is called instead when a subclass overrides it."""

    def check(self, response: httpx.Response) -> None:
        """Raise DeliveryFailed unless the response acknowledges the message
        (its status, then check_body).

        `response.content` holds at most MAX_ANSWER_BYTES of the answer;
        `response.request` names the method and URL only (not the headers or
        body sent: building that per delivery would cost for nothing)."""
        if not self.accepts(response.status_code):
            listed = (
                ""
                if self._statuses is None or not response.is_success
                else " (not in success_statuses)"
            )
            raise DeliveryFailed(
                # Secrets out before the cut: one straddling it would keep
                # its first part, which no longer matches.
                f"HTTP {response.status_code}{listed}: {self._redact(response.text, 200)}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                # Where the service as a whole asks to wait (RFC 6585, RFC
                # 9110), every delivery to it waits (DeliveryFailed).
                hold_destination=response.status_code in (429, 503),
                # Whether it is the message's fault (a 4xx) or the
                # destination's: the destination's circuit_breaker decides.
                status=response.status_code,
                response=response.content,
            )
        self.check_body(response.status_code, response.content)

    def _redact(self, text: str, limit: int | None = None) -> str:
        """`text` without the destination's secrets; its first `limit`
        characters (read no further than they need: router.ops.redaction)."""
        return self._redactor(text) if limit is None else self._redactor.cut(text, limit)

    async def aclose(self) -> None:
        """The shared HTTP client is closed by the router."""


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of the body as sent (a compressed body stays
    compressed: the check then sees bytes it cannot parse)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)

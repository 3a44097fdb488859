"""Twilio Messaging ingest: a route with `format: twilio` takes the webhook
Twilio sends for an incoming SMS, or WhatsApp message over Twilio, as
Twilio sends it (docs/twilio.md).

- The body is form-encoded (application/x-www-form-urlencoded): Twilio's
  parameters, names and values. A JSON body, or one without ``AccountSid``
  (every Twilio webhook has it), is not Twilio's: 400, nothing stored.
- ``X-Twilio-Signature`` must be what Twilio computes: the base64 of the
  HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio
  called (the ``public_url`` option: the router cannot know the URL a
  proxy or load balancer was called at) followed by every POST parameter
  sorted by name (then value; a pair sent twice counts once, as in
  Twilio's helper libraries), each name then its value, with no
  separator. The URL with and without its default port (:443, :80) is
  accepted, as Twilio's own helper libraries do. Missing or not matching: 401, nothing stored.
- An incoming message becomes one message: its body is the parameters as
  a JSON object (each name to its value; a name sent several times to the
  list of its values), ordered by ``From`` (``whatsapp:+14155238886`` for
  WhatsApp over Twilio, ``+14155238886`` for an SMS: the address a reply
  goes to) and deduplicated by ``MessageSid`` (Twilio retries a webhook
  that failed, and the ids make the retry a duplicate).
- A status callback (``MessageStatus`` other than ``received``: queued,
  sent, delivered, read, failed, ...) sent to the same URL goes to the
  ``statuses`` option's destination, ordered by ``To`` and deduplicated by
  message id and status, or is dropped (``statuses: drop``, the default).
- A message without ``MessageSid`` or ``From`` (or one longer than the
  router's key limit) is skipped: answered 200 (Twilio would not send it
  again) and kept for the operator (``router unroutable``) with the request
  to replay.
- The answer is an empty TwiML document (``<Response></Response>``,
  ``text/xml``): Twilio replies nothing to the sender; the bot answers
  through Twilio's REST API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from router.plugin import (
    MAX_KEY_LENGTH,
    BadRequest,
    FormatAnswer,
    FormatDocs,
    FormatHeader,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    OptionError,
    Unauthorized,
    hookimpl,
)

SIGNATURE_HEADER = "x-twilio-signature"
DROP = "drop"
# What Twilio is answered once a request is stored: no reply to the sender.
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

_encode = msgspec.json.Encoder().encode


class TwilioOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The account's auth token (Console > Account info): Twilio signs each
    # request with it. Write it as ${VAR}.
    auth_token: NonEmpty
    # The URL exactly as typed in the Twilio Console (or sent as the API's
    # StatusCallback), query string included: Twilio signs the URL it
    # calls, which behind a proxy is not the one the router sees.
    public_url: NonEmpty
    # Where status callbacks go: a destination's name, or drop.
    statuses: NonEmpty = DROP

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OptionError(
                ("public_url",),
                "must be the full URL Twilio calls, e.g. https://example.com/webhooks/twilio",
            )


def _pairs(body: bytes) -> list[tuple[str, str]]:
    """The form's (name, value) pairs in order, or the 400 naming why the
    body is not a form."""
    if body.lstrip()[:1] in (b"{", b"["):
        raise BadRequest(
            "the body is JSON: format twilio takes Twilio's form-encoded webhook "
            "(application/x-www-form-urlencoded)"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        return urllib.parse.parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), errors="strict"
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"body is not form-encoded (application/x-www-form-urlencoded): {exc}"
        ) from None


def _urls(url: str) -> list[str]:
    """The URL as configured, then with its default port added or removed:
    Twilio's helper libraries accept either (what Twilio signs depends on
    how the URL was written in the Console)."""
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}[parts.scheme]
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    auth = parts.netloc.rpartition("@")[0]
    auth = f"{auth}@" if auth else ""
    if parts.port is None:
        other = parts._replace(netloc=f"{auth}{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=f"{auth}{host}")
    else:
        return [url]
    return [url, urllib.parse.urlunsplit(other)]


def signature(auth_token: str, url: str, pairs: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio computes it: base64(HMAC-SHA1(auth
    token, url + each parameter sorted by name, name then value)). A
    (name, value) pair sent twice counts once, as in Twilio's helper
    libraries (twilio-python: each name's `sorted(set(values))`)."""
    data = url + "".join(name + value for name, value in sorted(set(pairs)))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def authenticate(options: TwilioOptions, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(SIGNATURE_HEADER)
    if not given:
        raise Unauthorized("missing signature header X-Twilio-Signature")
    pairs = _pairs(body)
    if not any(
        hmac.compare_digest(
            given.strip().encode(), signature(options.auth_token, u, pairs).encode()
        )
        for u in _urls(options.public_url)
    ):
        raise Unauthorized(
            "signature in X-Twilio-Signature does not match (is auth_token the account's, "
            "and public_url the URL exactly as Twilio calls it?)"
        )


def _params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Each name to its value; a name sent several times to its values."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name not in params:
            params[name] = value
        elif isinstance(params[name], list):
            params[name].append(value)
        else:
            params[name] = [params[name], value]
    return params


def _field(params: dict[str, Any], name: str, kind: str) -> tuple[str | None, str]:
    """A parameter used as an id or a key: (its value, None) or (None, the
    problem); its metric label is `kind.name`."""
    value = params.get(name)
    if not isinstance(value, str) or not value:
        return None, f"{name} must be a non-empty parameter"
    if len(value) > MAX_KEY_LENGTH:
        return None, f"{name} is longer than {MAX_KEY_LENGTH} characters"
    return value, ""


def parse(request: FormatRequest) -> list[IngestedMessage]:
    options: TwilioOptions = request.options
    params = _params(_pairs(request.body))
    if not params.get("AccountSid"):
        raise BadRequest("not a Twilio webhook: no AccountSid parameter")
    status = params.get("MessageStatus")
    is_status = isinstance(status, str) and status not in ("", "received")
    if is_status and options.statuses == DROP:
        return []  # not stored, so not read: nothing to skip
    kind = "status" if is_status else "message"
    # An SMS from an old API version may name its id SmsSid only.
    sid_name = "MessageSid" if "MessageSid" in params or "SmsSid" not in params else "SmsSid"
    sid, problem = _field(params, sid_name, kind)
    key_name = "To" if is_status else "From"
    key, key_problem = _field(params, key_name, kind)
    if sid is None or key is None:
        reason = f"{kind}.{sid_name}" if sid is None else f"{kind}.{key_name}"
        request.skip(reason, problem or key_problem, params, request.body)
        return []
    body = _encode(params)
    if is_status:
        dedup_id = f"status:{sid}:{status}"
        if len(dedup_id) > MAX_KEY_LENGTH:
            request.skip("status.MessageSid", "MessageSid and MessageStatus are too long", params)
            return []
        return [IngestedMessage(body, key, dedup_id, (options.statuses,), "status callback")]
    return [IngestedMessage(body, ordering_key=key, dedup_id=sid, where="message")]


def answer(options: TwilioOptions) -> FormatAnswer:
    return FormatAnswer(EMPTY_TWIML, "text/xml")


def _destinations(options: TwilioOptions) -> list[str]:
    return [] if options.statuses == DROP else [options.statuses]


# -- what /schema says about a `format: twilio` route (router.web.openapi.ingest) ------------

_SID = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}
FORM_SCHEMA = {
    "type": "object",
    "required": ["AccountSid"],
    "properties": {
        "MessageSid": {**_SID, "description": "The message's id (SM…/MM…): the dedup id."},
        "AccountSid": {"type": "string", "description": "The account (AC…); required."},
        "From": {
            **_SID,
            "description": "The sender, whatsapp:+… for WhatsApp over Twilio, +… for an SMS: "
            "the ordering key of a message.",
        },
        "To": {"type": "string", "description": "Your number; the ordering key of a status."},
        "Body": {"type": "string", "description": "The text of the message."},
        "NumMedia": {"type": "string"},
        "ProfileName": {"type": "string", "description": "WhatsApp: the sender's name."},
        "WaId": {"type": "string", "description": "WhatsApp: the sender's id."},
        "MessageStatus": {
            "type": "string",
            "description": "A status callback (sent, delivered, read, failed, ...): stored for "
            "the `statuses` destination, or dropped.",
        },
    },
    "additionalProperties": {"type": "string"},
    "description": "Twilio's Messaging webhook, form-encoded, as Twilio sends it "
    "(docs/twilio.md); every parameter passes to the destinations as a JSON object.",
}
FORM_EXAMPLE = {
    "MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
    "AccountSid": "AC00000000000000000000000000000000",
    "From": "whatsapp:+14017122661",
    "To": "whatsapp:+14155238886",
    "Body": "Hello!",
    "NumMedia": "0",
    "ProfileName": "Ana",
    "WaId": "14017122661",
}
DOCS = FormatDocs(
    body=FORM_SCHEMA,
    example=FORM_EXAMPLE,
    headers=(
        FormatHeader(
            "X-Twilio-Signature",
            "base64 of the HMAC-SHA1, keyed with the auth token, of the route's public_url "
            "and every POST parameter sorted by name (name then value; a repeated identical "
            "pair once). Missing or not matching: 401, nothing stored.",
            "^[A-Za-z0-9+/]{27}=$",
        ),
    ),
    media_type="application/x-www-form-urlencoded",
)


@hookimpl
def router_ingest_formats() -> list[IngestFormat]:
    return [
        IngestFormat(
            name="twilio",
            parse=parse,
            options=TwilioOptions,
            authenticate=authenticate,
            destinations=_destinations,
            description="Twilio Messaging webhooks (SMS, WhatsApp over Twilio): "
            "X-Twilio-Signature, one stored message per request by From, empty TwiML answer",
            docs=DOCS,
            answer=answer,
        )
    ]

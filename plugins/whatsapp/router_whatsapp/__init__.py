"""WhatsApp Cloud API ingest: a route with `format: whatsapp` takes Meta's
webhook as Meta sends it (docs/whatsapp.md).

- GET is Meta's verification request: ``hub.mode=subscribe`` and
  ``hub.verify_token`` equal to the configured token answer 200 with
  ``hub.challenge`` as plain text (nosniff); anything else 403, a challenge
  that is not a short token (1-64 letters, digits, ``.``, ``_``, ``-``) 400.
- POST must carry ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
  body, keyed with the app secret>``; else 401 and nothing is stored.
- Every ``entry[].changes[].value.messages[]`` becomes a message of its own,
  ordered by the sender's ``wa_id`` (``from``; for a user with a username
  whose phone Meta withholds, ``from_user_id``: the business-scoped user
  id, BSUID) and deduplicated by its WhatsApp message
  id (``wamid.…``: Meta redelivers a webhook it got no 200 for, for days).
  A text message becomes ``{"mensaje": <text>, "wa_id": <sender>, "id",
  "timestamp", "type": "text", "text": {...}, ...}``; every other type keeps
  Meta's message object as sent, with ``wa_id`` added. Each also gets the
  business number it reached (``phone_number_id``) and, when Meta sends
  it, the sender's ``profile_name``.
- ``statuses[]`` (sent, delivered, read, failed) go to the destination
  named by the ``statuses`` option, ordered by ``recipient_id`` (or
  ``recipient_user_id``, as above: a conversation's statuses in order)
  and deduplicated by message id and status, or are dropped
  (``statuses: drop``, the default).
- Changes of other fields (``account_update``, templates, ...) are not
  messages: they are ignored (answered 200, so Meta does not redeliver them).
- The messages and statuses of one POST are stored in one atomic step,
  or none is: a 503 makes Meta redeliver it, and the ids make the redelivery
  store only what was missing.
- A malformed message or status (no ``id``, ``type``, neither ``from`` nor
  ``from_user_id``, a text without ``text.body``, a status without ``id``,
  ``status`` or a recipient, an item that is not an object) is skipped,
  not the POST: the rest is stored and the answer is 200 naming how many
  were skipped; the item is kept for the operator (router.queue.unroutable),
  with the webhook carrying only it, to replay.
  Meta redelivers a POST that got no 200 for days, and the good messages in
  it would never arrive. A body that is not Meta's envelope (not JSON,
  ``object`` not ``whatsapp_business_account``, ``entry``, ``changes``,
  ``value``, ``messages`` or ``statuses`` of the wrong JSON type) is the
  sender's mistake, not one item's: 400, nothing stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from router.plugin import (
    MAX_KEY_LENGTH,
    ApiError,
    BadRequest,
    FormatDocs,
    FormatHeader,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    Unauthorized,
    hookimpl,
)

SIGNATURE_HEADER = "x-hub-signature-256"
OBJECT = "whatsapp_business_account"
DROP = "drop"

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

_encode = msgspec.json.Encoder().encode


class WhatsAppOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The "Verify token" typed in the App Dashboard's webhook settings.
    verify_token: NonEmpty
    # The app's secret (App Dashboard > App settings > Basic): Meta signs
    # each POST with it. Write both as ${VAR}.
    app_secret: NonEmpty
    # Where statuses (sent, delivered, read, failed) go: a destination's
    # name, or drop.
    statuses: NonEmpty = DROP


def authenticate(options: WhatsAppOptions, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(SIGNATURE_HEADER)
    if given is None:
        raise Unauthorized("missing signature header X-Hub-Signature-256")
    expected = "sha256=" + hmac.new(options.app_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
        raise Unauthorized(
            "signature in X-Hub-Signature-256 does not match the body (is app_secret the app's?)"
        )


# What a hub.challenge may be. Meta sends a number (e.g. 1158201444); the
# answer echoes it, so anything else (markup, 60 KB) is refused rather than
# reflected: a short token of letters, digits, '.', '_', '-' leaves room for
# a change on Meta's side and none for a page.
MAX_CHALLENGE = 64
_CHALLENGE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_CHALLENGE}}}")


def verify(options: WhatsAppOptions, query: Mapping[str, str]) -> str:
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token")
    challenge = query.get("hub.challenge")
    if mode != "subscribe":
        raise ApiError(403, "verification refused: hub.mode is not subscribe")
    if token is None or not hmac.compare_digest(token.encode(), options.verify_token.encode()):
        raise ApiError(403, "verification refused: hub.verify_token does not match")
    if not challenge:
        raise ApiError(400, "verification request without hub.challenge")
    if not _CHALLENGE.fullmatch(challenge):
        raise ApiError(
            400,
            f"verification refused: hub.challenge must be 1 to {MAX_CHALLENGE} letters, digits, "
            "'.', '_' or '-' (Meta sends a number)",
        )
    return challenge


def _list(parent: dict[str, Any], name: str, where: str, required: bool = False) -> list[Any]:
    value = parent.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{where}.{name} must be an array")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be an object")
    return value


class _Malformed(Exception):
    """One message or status that cannot be taken: it is skipped
    (FormatRequest.skip), the rest of the POST is stored."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason  # the metric label: "message.from", "status.id", ...
        self.problem = problem


def _item(value: Any, where: str, kind: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(kind, f"{where} must be an object")
    return value


def _text(item: dict[str, Any], name: str, where: str, kind: str, key: bool = False) -> str:
    """A required string field of a message or status; `key`: it orders or
    identifies the message, within the router's key limit."""
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{kind}.{name}", f"{where}.{name} must be a non-empty string")
    if key and len(value) > MAX_KEY_LENGTH:
        raise _Malformed(
            f"{kind}.{name}", f"{where}.{name} is longer than {MAX_KEY_LENGTH} characters"
        )
    return value


def _user(item: dict[str, Any], phone: str, bsuid: str, where: str, kind: str) -> str:
    """Who a message is from (a status is to): the phone number (`from`,
    `recipient_id`) when Meta sends one, else the business-scoped user id
    (`from_user_id`, `recipient_user_id`) of a user with a username, whose
    phone Meta withholds (`""` or absent). The phone first: a user known by
    it keeps the conversation key their earlier messages had."""
    value = item.get(phone)
    if value is None or value == "":
        if isinstance(item.get(bsuid), str) and item[bsuid]:
            return _text(item, bsuid, where, kind, key=True)
        raise _Malformed(
            f"{kind}.{phone}",
            f"{where}.{phone} must be a non-empty string (or {bsuid}, for a user with a username)",
        )
    return _text(item, phone, where, kind, key=True)


def _message(
    m: dict[str, Any], where: str, phone_number_id: Any, names: dict[str, str]
) -> IngestedMessage:
    wamid = _text(m, "id", where, "message", key=True)
    sender = _user(m, "from", "from_user_id", where, "message")
    kind = _text(m, "type", where, "message")
    extra: dict[str, Any] = {"wa_id": sender}
    if phone_number_id is not None:
        extra["phone_number_id"] = phone_number_id
    if sender in names:
        extra["profile_name"] = names[sender]
    if kind == "text":
        text = m.get("text")
        body = text.get("body") if isinstance(text, dict) else None
        if not isinstance(body, str):
            raise _Malformed("message.text", f"{where}.text must be an object with a string body")
        payload = {
            "mensaje": body,
            "wa_id": sender,
            "id": wamid,
            "timestamp": m.get("timestamp"),
            "type": kind,
            **{k: v for k, v in m.items() if k not in ("id", "timestamp", "type")},
            **extra,
        }
    else:
        payload = {**m, **extra}
    return IngestedMessage(_encode(payload), ordering_key=sender, dedup_id=wamid, where=where)


def _status(
    s: dict[str, Any], where: str, phone_number_id: Any, destination: str
) -> IngestedMessage:
    wamid = _text(s, "id", where, "status", key=True)
    status = _text(s, "status", where, "status")
    recipient = _user(s, "recipient_id", "recipient_user_id", where, "status")
    # One message id has a status per step (sent, delivered, read): each
    # step is its own event; a redelivered one is a duplicate.
    dedup_id = f"status:{wamid}:{status}"
    if len(dedup_id) > MAX_KEY_LENGTH:
        raise _Malformed(
            "status.id",
            f"{where}: id and status together are longer than {MAX_KEY_LENGTH - 8} characters",
        )
    payload = {**s}
    if phone_number_id is not None:
        payload["phone_number_id"] = phone_number_id
    return IngestedMessage(
        _encode(payload),
        ordering_key=recipient,
        dedup_id=dedup_id,
        destinations=(destination,),
        where=where,
    )


def parse(request: FormatRequest) -> list[IngestedMessage]:
    options: WhatsAppOptions = request.options
    payload = request.json()
    kind = payload.get("object")
    if kind != OBJECT:
        raise BadRequest(
            f'`object` must be "{OBJECT}" (a WhatsApp Cloud API webhook), got '
            f"{_encode(kind).decode() if kind is not None else 'none'}"
        )
    out: list[IngestedMessage] = []
    for i, entry in enumerate(_list(payload, "entry", "body", required=True)):
        e_where = f"entry[{i}]"
        entry = _object(entry, e_where)
        for j, change in enumerate(_list(entry, "changes", e_where, required=True)):
            c_where = f"{e_where}.changes[{j}]"
            change = _object(change, c_where)
            if change.get("field") != "messages":
                continue  # not a message or a status: ignored (see the module's text)
            value = _object(change.get("value"), f"{c_where}.value")
            v_where = f"{c_where}.value"
            metadata = value.get("metadata")
            phone_number_id = (
                metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            )
            names: dict[str, str] = {}
            for contact in _list(value, "contacts", v_where):
                if not isinstance(contact, dict):
                    continue
                profile = contact.get("profile")
                name = profile.get("name") if isinstance(profile, dict) else None
                if isinstance(name, str):
                    # A username user's contact has `user_id` (the BSUID) and
                    # maybe no `wa_id`: either may be the message's key.
                    for id_field in ("wa_id", "user_id"):
                        if isinstance(contact.get(id_field), str) and contact[id_field]:
                            names[contact[id_field]] = name
            for k, m in enumerate(_list(value, "messages", v_where)):
                m_where = f"{v_where}.messages[{k}]"
                try:
                    out.append(
                        _message(_item(m, m_where, "message"), m_where, phone_number_id, names)
                    )
                except _Malformed as exc:
                    alone = _alone(entry, change, value, "messages", m)
                    request.skip(exc.reason, exc.problem, m, alone)
            statuses = _list(value, "statuses", v_where)
            if options.statuses == DROP:
                continue  # not stored, so not read: nothing to skip
            for k, s in enumerate(statuses):
                s_where = f"{v_where}.statuses[{k}]"
                try:
                    status = _item(s, s_where, "status")
                    out.append(_status(status, s_where, phone_number_id, options.statuses))
                except _Malformed as exc:
                    alone = _alone(entry, change, value, "statuses", s)
                    request.skip(exc.reason, exc.problem, s, alone)
    return out


def _alone(
    entry: dict[str, Any], change: dict[str, Any], value: dict[str, Any], name: str, item: Any
) -> bytes:
    """The request Meta would send with only `item`: its entry's id, its
    change's field, metadata and the contact of the item's user, and the
    item: what `router unroutable replay` parses again once the router
    understands the item. Only those (not the rest of the value, whose
    contacts list grows with the request): a request of n bad items keeps
    O(n) bytes, not O(n²)."""
    alone_value: dict[str, Any] = {
        k: value[k] for k in ("messaging_product", "metadata") if k in value
    }
    contacts = value.get("contacts")
    if isinstance(item, dict) and isinstance(contacts, list):
        ids = {item.get(f) for f in ("from", "from_user_id", "recipient_id", "recipient_user_id")}
        ids -= {None, ""}
        mine = [
            c for c in contacts if isinstance(c, dict) and ids & {c.get("wa_id"), c.get("user_id")}
        ]
        if mine:
            alone_value["contacts"] = mine[:1]
    alone_value[name] = [item]
    alone_change = {k: change[k] for k in ("field",) if k in change}
    alone_entry = {k: entry[k] for k in ("id",) if k in entry}
    alone_entry["changes"] = [{**alone_change, "value": alone_value}]
    return _encode({"object": OBJECT, "entry": [alone_entry]})


def _destinations(options: WhatsAppOptions) -> list[str]:
    return [] if options.statuses == DROP else [options.statuses]


# -- what /schema says about a `format: whatsapp` route (router.web.openapi.ingest) ----------

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}
_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "from": {
            "type": "string",
            "maxLength": MAX_KEY_LENGTH,
            "description": "The sender's phone (wa_id): the ordering key; empty or absent "
            "for a user with a username, ordered by from_user_id.",
        },
        "from_user_id": {
            **_ID,
            "description": "The sender's business-scoped user id (BSUID, e.g. "
            "US.13491208655302741918): the ordering key when from is empty or absent.",
        },
        "id": {**_ID, "description": "The WhatsApp message id (wamid.…): the dedup id."},
        "timestamp": {"type": "string"},
        "type": {"type": "string", "minLength": 1, "examples": ["text", "image", "interactive"]},
        "text": {
            "type": "object",
            "required": ["body"],
            "properties": {"body": {"type": "string"}},
            "description": "Required when type is text.",
        },
    },
    "additionalProperties": True,
    "description": "One message; the others of its type (image, interactive, ...) pass "
    "through. A malformed one is skipped, not the POST (and kept: router unroutable).",
}
_STATUS_SCHEMA = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {**_ID, "description": "The id of the message the status is about."},
        "status": {"type": "string", "examples": ["sent", "delivered", "read", "failed"]},
        "recipient_id": {
            "type": "string",
            "maxLength": MAX_KEY_LENGTH,
            "description": "The ordering key of statuses; empty or absent for a user with "
            "a username, ordered by recipient_user_id.",
        },
        "recipient_user_id": {
            **_ID,
            "description": "The recipient's BSUID: the ordering key when recipient_id is "
            "empty or absent.",
        },
        "timestamp": {"type": "string"},
    },
    "additionalProperties": True,
    "description": "One delivery status, stored for the `statuses` destination (dropped "
    "with statuses: drop). A malformed one is skipped, not the POST.",
}
ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["object", "entry"],
    "properties": {
        "object": {"const": OBJECT},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["changes"],
                "properties": {
                    "id": {"type": "string", "description": "The WhatsApp Business Account id."},
                    "changes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {
                                    "type": "string",
                                    "description": "messages: read; any other field is "
                                    "ignored (answered 200).",
                                },
                                "value": {
                                    "type": "object",
                                    "properties": {
                                        "messaging_product": {"const": "whatsapp"},
                                        "metadata": {
                                            "type": "object",
                                            "properties": {
                                                "display_phone_number": {"type": "string"},
                                                "phone_number_id": {"type": "string"},
                                            },
                                        },
                                        "contacts": {
                                            "type": "array",
                                            "items": {"type": "object"},
                                            "description": "Names profile_name by wa_id.",
                                        },
                                        "messages": {"type": "array", "items": _MESSAGE_SCHEMA},
                                        "statuses": {"type": "array", "items": _STATUS_SCHEMA},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "description": "Meta's WhatsApp Cloud API webhook, as Meta sends it (docs/whatsapp.md). "
    "Not this envelope (invalid JSON, another object, entry or changes not arrays): 400.",
}
ENVELOPE_EXAMPLE = {
    "object": OBJECT,
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "44912345678"}],
                        "messages": [
                            {
                                "from": "44912345678",
                                "id": "wamid.TEST1",
                                "timestamp": "1700000000",
                                "type": "text",
                                "text": {"body": "Hola!"},
                            }
                        ],
                    },
                }
            ],
        }
    ],
}
DOCS = FormatDocs(
    body=ENVELOPE_SCHEMA,
    example=ENVELOPE_EXAMPLE,
    headers=(
        FormatHeader(
            "X-Hub-Signature-256",
            "`sha256=` and the hex HMAC-SHA256 of the raw body keyed with the app secret, "
            "as Meta signs every POST. Missing or not matching: 401, nothing stored.",
            "^sha256=[0-9a-fA-F]{64}$",
        ),
    ),
    verify_query={
        "hub.mode": "subscribe (anything else: 403).",
        "hub.verify_token": "The Verify token typed in the App Dashboard (another: 403).",
        "hub.challenge": "Answered back as text/plain: 1 to 64 letters, digits, '.', '_' "
        "or '-' (Meta sends a number); anything else: 400.",
    },
    verify_description="Meta's verification request (when the callback URL is saved in the "
    "App Dashboard): hub.mode subscribe and the route's verify_token answer 200 with "
    "hub.challenge as plain text; anything else 403.",
)


@hookimpl
def router_ingest_formats() -> list[IngestFormat]:
    return [
        IngestFormat(
            name="whatsapp",
            parse=parse,
            options=WhatsAppOptions,
            authenticate=authenticate,
            verify=verify,
            destinations=_destinations,
            description="WhatsApp Cloud API webhooks: Meta's GET handshake, "
            "X-Hub-Signature-256, one stored message per WhatsApp message",
            docs=DOCS,
        )
    ]

"""Telegram Bot API ingest: a route with `format: telegram` takes the
Updates Telegram POSTs to a bot's webhook (setWebhook), as Telegram sends
them (docs/telegram.md).

- ``X-Telegram-Bot-Api-Secret-Token`` must equal the ``secret_token``
  given to setWebhook (compared in constant time); missing or another:
  401, nothing stored.
- The body is one Update (JSON). Without an integer ``update_id`` it is
  not an Update: 400, nothing stored.
- An Update becomes one message, its body the Update exactly as posted,
  deduplicated by ``update_id`` (Telegram redelivers an update it got no
  2xx for) and ordered by its chat's id: ``message.chat.id`` (also of
  ``edited_message``, ``channel_post``, ``edited_channel_post``, the
  business messages and their deletion, ``my_chat_member``,
  ``chat_member``, ``chat_join_request``, the reactions and boosts), the
  chat of the message a ``callback_query`` came from, a ``poll_answer``'s
  ``voter_chat``.
- An Update from a user without a chat (an inline query, a chosen inline
  result, a callback query from an inline message, a shipping or
  pre-checkout query, a paid media purchase, a poll answer of a user, a
  business connection) is ordered by the user's id, which is also the id
  of the user's private chat with the bot: it queues with that chat's
  messages. A pre-checkout query must be answered within 10 seconds.
- An Update with neither (a ``poll``'s new state, ...) is skipped, not
  refused: answered 200 (Telegram would not send it again), logged,
  counted and kept for the operator (``router unroutable``) with the
  update to replay.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from router.plugin import (
    MAX_KEY_LENGTH,
    BadRequest,
    FormatDocs,
    FormatHeader,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    Unauthorized,
    hookimpl,
)

SECRET_HEADER = "x-telegram-bot-api-secret-token"

# What setWebhook accepts as a secret_token: 1-256 of A-Z, a-z, 0-9, _ and -.
SecretToken = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,256}$")]

# The fields of an Update whose object has the chat (`.chat.id`).
CHAT_FIELDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "message_reaction_count",
    "chat_boost",
    "removed_chat_boost",
    "deleted_business_messages",
)
# The fields of an Update that have a user but no chat: ordered by the
# user's id (`from.id`), the id of the user's private chat with the bot.
USER_FIELDS = (
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
)


class TelegramOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The secret_token given to setWebhook: Telegram sends it in every
    # request's X-Telegram-Bot-Api-Secret-Token. Write it as ${VAR}.
    secret_token: SecretToken


def authenticate(options: TelegramOptions, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(SECRET_HEADER)
    if given is None:
        raise Unauthorized("missing header X-Telegram-Bot-Api-Secret-Token")
    if not hmac.compare_digest(given.encode(), options.secret_token.encode()):
        raise Unauthorized(
            "X-Telegram-Bot-Api-Secret-Token is not the route's secret_token "
            "(the one given to setWebhook)"
        )


def _chat_id(update: dict[str, Any]) -> tuple[Any, str] | None:
    """The update's chat id (or, without a chat, its user's) and where it
    is, or None (neither)."""
    for name in CHAT_FIELDS:
        item = update.get(name)
        if isinstance(item, dict) and isinstance(item.get("chat"), dict):
            return item["chat"].get("id"), f"{name}.chat.id"
    query = update.get("callback_query")
    if isinstance(query, dict):
        message = query.get("message")
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            return message["chat"].get("id"), "callback_query.message.chat.id"
        if isinstance(query.get("from"), dict):  # from an inline message
            return query["from"].get("id"), "callback_query.from.id"
    answer = update.get("poll_answer")
    if isinstance(answer, dict):
        for field in ("voter_chat", "user"):  # an anonymous vote of a chat, or a user's
            if isinstance(answer.get(field), dict):
                return answer[field].get("id"), f"poll_answer.{field}.id"
    for name in USER_FIELDS:
        item = update.get(name)
        if isinstance(item, dict) and isinstance(item.get("from"), dict):
            return item["from"].get("id"), f"{name}.from.id"
    connection = update.get("business_connection")
    if isinstance(connection, dict) and "user_chat_id" in connection:
        return connection["user_chat_id"], "business_connection.user_chat_id"
    return None


def parse(request: FormatRequest) -> list[IngestedMessage]:
    update = request.json()
    update_id = update.get("update_id")
    if isinstance(update_id, bool) or not isinstance(update_id, int):
        raise BadRequest("update_id must be an integer (the body is not a Telegram Update)")
    found = _chat_id(update)
    kinds = [k for k in update if k != "update_id"]
    if found is None:
        kind = kinds[0] if kinds else "nothing"
        request.skip(
            "update.chat",
            f"update {update_id} ({kind}) has no chat nor user: no conversation to order it by",
            update,
            request.body,
        )
        return []
    chat_id, where = found
    if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or chat_id == "":
        request.skip("update.chat", f"{where} must be an integer", update, request.body)
        return []
    key = str(chat_id)
    if len(key) > MAX_KEY_LENGTH:
        request.skip("update.chat", f"{where} is too long", update, request.body)
        return []
    return [IngestedMessage(request.body, ordering_key=key, dedup_id=str(update_id), where=where)]


# -- what /schema says about a `format: telegram` route (router.web.openapi.ingest) ----------

_CHAT = {
    "type": "object",
    "properties": {"chat": {"type": "object", "properties": {"id": {"type": "integer"}}}},
}
_USER = {"type": "object", "properties": {"id": {"type": "integer"}}}
_FROM = {"type": "object", "properties": {"from": _USER}}
UPDATE_SCHEMA = {
    "type": "object",
    "required": ["update_id"],
    "properties": {
        "update_id": {"type": "integer", "description": "The update's id: the dedup id."},
        **{name: _CHAT for name in CHAT_FIELDS[:4]},
        "callback_query": {
            "type": "object",
            "properties": {"message": _CHAT, "from": _USER},
            "description": "Ordered by the chat of the message its button was on; from an "
            "inline message, by the user's id.",
        },
        **{
            name: {**_FROM, "description": "Ordered by the user's id (their private chat's)."}
            for name in ("inline_query", "shipping_query", "pre_checkout_query")
        },
    },
    "additionalProperties": True,
    "description": "A Telegram Bot API Update, as Telegram posts it to a webhook "
    "(docs/telegram.md), delivered as posted and ordered by its chat's id, or, for an update "
    "from a user without a chat (an inline query, a payment query, ...), by the user's id "
    "(the id of the user's private chat with the bot); an update with neither is skipped "
    "(and kept: router unroutable).",
}
UPDATE_EXAMPLE = {
    "update_id": 10000,
    "message": {
        "date": 1441645532,
        "chat": {"last_name": "Test Lastname", "id": 1111111, "first_name": "Test"},
        "message_id": 1365,
        "from": {"last_name": "Test Lastname", "id": 1111111, "first_name": "Test"},
        "text": "/start",
    },
}
DOCS = FormatDocs(
    body=UPDATE_SCHEMA,
    example=UPDATE_EXAMPLE,
    headers=(
        FormatHeader(
            "X-Telegram-Bot-Api-Secret-Token",
            "The secret_token given to setWebhook. Missing or another: 401, nothing stored.",
            "^[A-Za-z0-9_-]{1,256}$",
        ),
    ),
)


@hookimpl
def router_ingest_formats() -> list[IngestFormat]:
    return [
        IngestFormat(
            name="telegram",
            parse=parse,
            options=TelegramOptions,
            authenticate=authenticate,
            description="Telegram Bot API webhook updates: X-Telegram-Bot-Api-Secret-Token, "
            "update_id dedup, ordered by chat",
            docs=DOCS,
        )
    ]

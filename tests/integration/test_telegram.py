"""`format: telegram` (plugins/telegram): the Updates Telegram posts to a
bot's webhook, taken as Telegram sends them, against the real app, a real
Redis-compatible server and a real bot. The updates are those of
Telegram's webhook guide ("Testing your bot with updates": a message with
text, an edited message, an inline query, a callback query from an inline
message) and, for the other kinds (a channel post, a callback query from a
chat's message, payment queries, poll answers, ...), shaped as the Bot
API's Update and its objects describe them. docs/telegram.md."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from router.config import route_key
from router.config.loading import ConfigError, load
from router.queue.envelope import decode
from router.queue.keys import DestinationKeys, RouteKeys
from tests.support.bot import Bot
from tests.support.messages import assert_refused, stored_keys
from tests.support.routes import write_yaml
from tests.support.servers import serve, wait_until

PATH = "/webhooks/telegram"
SECRET = "s3cr3t_Token-42"

ROUTES = """
routes:
  - path: /webhooks/telegram
    format: telegram
    format_options:
      secret_token: s3cr3t_Token-42
    destinations: [bot]
    dedup_ttl: 1d
destinations:
  bot:
    plugin: http
    url: {bot_url}
    ordering_key: chat_id
    timeout: 2s
    lease: 5s
    retry: {{initial: 50ms, max_delay: 200ms}}
"""

_TEST_USER = {"last_name": "Test Lastname", "id": 1111111, "first_name": "Test", "username": "Test"}

# Telegram's webhook guide, "Message with text".
MESSAGE = {
    "update_id": 10000,
    "message": {
        "date": 1441645532,
        "chat": dict(_TEST_USER),
        "message_id": 1365,
        "from": dict(_TEST_USER),
        "text": "/start",
    },
}
# Its "Edited message".
EDITED = {
    "update_id": 10001,
    "edited_message": {
        "date": 1441645532,
        "chat": dict(_TEST_USER),
        "message_id": 1365,
        "from": dict(_TEST_USER),
        "text": "Edited text",
        "edit_date": 1441646600,
    },
}
# Its "Inline query": no chat.
INLINE_QUERY = {
    "update_id": 10002,
    "inline_query": {
        "id": 134567890097,
        "from": {**_TEST_USER, "type": "private"},
        "query": "inline query",
        "offset": "",
    },
}
# Its "Callback query": from an inline message, so no chat either.
INLINE_CALLBACK = {
    "update_id": 10003,
    "callback_query": {
        "id": "4382bfdwdsf43",
        "from": dict(_TEST_USER),
        "data": "Data from button callback",
        "inline_message_id": "1234csdbsk4839",
    },
}
# A callback query from a button on a message of a group chat (Bot API:
# CallbackQuery.message is the message with the button).
CHAT_CALLBACK = {
    "update_id": 10004,
    "callback_query": {
        "id": "4382bfdwdsf44",
        "from": dict(_TEST_USER),
        "message": {
            "message_id": 1366,
            "date": 1441645600,
            "chat": {"id": -1001234567890, "title": "Group", "type": "supergroup"},
            "text": "Choose:",
        },
        "chat_instance": "-76543210987654321",
        "data": "option_1",
    },
}
# A channel post (Bot API: Update.channel_post is a Message of a channel).
CHANNEL_POST = {
    "update_id": 10005,
    "channel_post": {
        "message_id": 7,
        "sender_chat": {"id": -1009876543210, "title": "News", "type": "channel"},
        "chat": {"id": -1009876543210, "title": "News", "type": "channel"},
        "date": 1441645700,
        "text": "Hello, channel",
    },
}

_USER = {"id": 1111111, "is_bot": False, "first_name": "Test", "language_code": "en"}
# Bot API PreCheckoutQuery: the bot must answer it within 10 seconds.
PRE_CHECKOUT = {
    "update_id": 10006,
    "pre_checkout_query": {
        "id": "4382bfdwdsf45",
        "from": dict(_USER),
        "currency": "XTR",
        "total_amount": 50,
        "invoice_payload": "order-42",
    },
}
# Bot API ShippingQuery.
SHIPPING = {
    "update_id": 10007,
    "shipping_query": {
        "id": "4382bfdwdsf46",
        "from": dict(_USER),
        "invoice_payload": "order-42",
        "shipping_address": {
            "country_code": "AR",
            "state": "CABA",
            "city": "Buenos Aires",
            "street_line1": "Av. Corrientes 1234",
            "street_line2": "",
            "post_code": "C1043",
        },
    },
}
# Bot API ChosenInlineResult.
CHOSEN_INLINE = {
    "update_id": 10008,
    "chosen_inline_result": {"result_id": "r1", "from": dict(_USER), "query": "inline query"},
}
# Bot API PollAnswer: of a user, or of a chat voting anonymously (voter_chat;
# user is then the channel bot's placeholder).
POLL_ANSWER = {
    "update_id": 10009,
    "poll_answer": {"poll_id": "5998327788542656518", "user": dict(_USER), "option_ids": [1]},
}
CHAT_POLL_ANSWER = {
    "update_id": 10010,
    "poll_answer": {
        "poll_id": "5998327788542656518",
        "voter_chat": {"id": -1009876543210, "title": "News", "type": "channel"},
        "user": {"id": 136817688, "is_bot": True, "first_name": "Channel"},
        "option_ids": [0],
    },
}
# Bot API BusinessMessagesDeleted.
DELETED_BUSINESS = {
    "update_id": 10011,
    "deleted_business_messages": {
        "business_connection_id": "bc-1",
        "chat": {"id": 2222222, "first_name": "Client", "type": "private"},
        "message_ids": [17, 18],
    },
}
# Bot API Poll (a poll's new state): neither a chat nor a user.
POLL = {
    "update_id": 10012,
    "poll": {
        "id": "5998327788542656518",
        "question": "Which?",
        "options": [{"text": "a", "voter_count": 1}, {"text": "b", "voter_count": 0}],
        "total_voter_count": 1,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
    },
}


def post(base: str, update: Any, secret: str | None = SECRET) -> httpx.Response:
    body = update if isinstance(update, bytes) else json.dumps(update).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return httpx.post(base + PATH, content=body, headers=headers)


def lane(redis: Redis, key: str) -> list[bytes]:
    return [bytes(decode(r).body) for r in redis.lrange(DestinationKeys("bot").lane(key), 0, -1)]


def nothing_stored(redis: Redis) -> bool:
    return [k for k in stored_keys(redis) if not k.endswith(b":counts")] == []


def kept(redis: Redis) -> list[dict[str, Any]]:
    return [json.loads(k) for k in redis.lrange(RouteKeys(route_key(PATH)).unroutable, 0, -1)]


@pytest.fixture()
def routes(tmp_path: Path) -> Any:
    def write(bot_url: str = "http://127.0.0.1:9/bot") -> Path:
        return write_yaml(tmp_path, ROUTES.format(bot_url=bot_url))

    return write


@pytest.fixture()
def api(clean_redis: str, routes: Any) -> Iterator[str]:
    with serve(clean_redis, routes()) as server:
        yield server.url


def test_a_request_without_the_secret_token_is_refused(api: str, redis: Redis) -> None:
    assert_refused(post(api, MESSAGE, secret=None), 401, "X-Telegram-Bot-Api-Secret-Token")
    assert nothing_stored(redis)


def test_another_secret_token_is_refused(api: str, redis: Redis) -> None:
    assert_refused(post(api, MESSAGE, secret="s3cr3t_Token-43"), 401, "secret_token")
    assert_refused(post(api, MESSAGE, secret=""), 401)
    assert nothing_stored(redis)


def test_an_update_is_stored_as_posted_by_its_chat(api: str, redis: Redis) -> None:
    body = json.dumps(MESSAGE, indent=1).encode()  # the bytes as Telegram sent them
    r = post(api, body)
    assert r.status_code == 200, r.text
    assert r.json()["messages"][0]["duplicate"] is False
    assert lane(redis, "1111111") == [body]


def test_a_redelivered_update_is_stored_once(api: str, redis: Redis) -> None:
    first = post(api, MESSAGE).json()
    again = post(api, MESSAGE).json()  # same update_id
    assert again["messages"] == [{"id": first["messages"][0]["id"], "duplicate": True}]
    assert len(lane(redis, "1111111")) == 1


@pytest.mark.parametrize(
    ("update", "key"),
    [
        (EDITED, "1111111"),
        (CHAT_CALLBACK, "-1001234567890"),
        (CHANNEL_POST, "-1009876543210"),
        (DELETED_BUSINESS, "2222222"),
        (CHAT_POLL_ANSWER, "-1009876543210"),
        # No chat: the user's id, which is their private chat's with the bot.
        (INLINE_QUERY, "1111111"),
        (INLINE_CALLBACK, "1111111"),
        (CHOSEN_INLINE, "1111111"),
        (SHIPPING, "1111111"),
        (PRE_CHECKOUT, "1111111"),
        (POLL_ANSWER, "1111111"),
    ],
    ids=[
        "edited_message",
        "callback_query",
        "channel_post",
        "deleted_business_messages",
        "poll_answer.voter_chat",
        "inline_query",
        "inline_callback_query",
        "chosen_inline_result",
        "shipping_query",
        "pre_checkout_query",
        "poll_answer.user",
    ],
)
def test_the_chat_id_is_the_key(api: str, redis: Redis, update: dict[str, Any], key: str) -> None:
    assert post(api, update).status_code == 200
    (stored,) = lane(redis, key)
    assert json.loads(stored) == update


def test_a_payment_query_queues_with_the_users_private_chat(api: str, redis: Redis) -> None:
    for update in (MESSAGE, SHIPPING, PRE_CHECKOUT):
        r = post(api, update)
        assert r.status_code == 200 and r.json()["skipped"] == 0, r.text
    assert [json.loads(b)["update_id"] for b in lane(redis, "1111111")] == [10000, 10007, 10006]


def test_an_update_without_a_chat_or_user_is_skipped_and_kept(api: str, redis: Redis) -> None:
    r = post(api, POLL)
    assert r.status_code == 200, r.text  # Telegram would not send it again
    answer = r.json()
    assert answer["messages"] == [] and answer["skipped"] == 1
    assert "has no chat nor user" in answer["problems"][0]
    (item,) = kept(redis)
    assert item["reason"] == "update.chat" and item["item"] == POLL
    assert json.loads(item["body"]) == POLL  # replayable as it came
    assert [k for k in stored_keys(redis) if b"unroutable" not in k and b":counts" not in k] == []


def test_a_body_that_is_not_an_update_is_refused(api: str, redis: Redis) -> None:
    assert_refused(post(api, {"message": MESSAGE["message"]}), 400, "update_id")
    assert_refused(post(api, {**MESSAGE, "update_id": "10000"}), 400, "update_id")
    assert_refused(post(api, b"[1]"), 400, "object")
    assert nothing_stored(redis)


def test_a_secret_token_telegram_would_refuse_is_a_config_error(
    clean_redis: str, tmp_path: Path
) -> None:
    file = write_yaml(tmp_path, ROUTES.format(bot_url="http://127.0.0.1:9/bot"))
    file.write_text(file.read_text().replace("s3cr3t_Token-42", "has spaces"))
    with pytest.raises(ConfigError, match="secret_token"):
        load(str(file))


def test_updates_reach_the_bot_in_order_per_chat(clean_redis: str, routes: Any, bot: Bot) -> None:
    chats = [1111111, -1001234567890]
    sent: dict[int, list[str]] = {c: [] for c in chats}
    with serve(clean_redis, routes(bot_url=bot.url), run_workers=True) as server:
        for i in range(5):
            for chat in chats:
                update = copy.deepcopy(MESSAGE)
                update["update_id"] = 20000 + i * 10 + chats.index(chat)
                update["message"]["chat"] = {"id": chat, "type": "private"}
                update["message"]["text"] = f"{chat}:{i}"
                sent[chat].append(f"{chat}:{i}")
                assert post(server.url, update).status_code == 200
        wait_until(lambda: len(bot.acknowledged()) >= 10, what="10 updates delivered")
    got = {
        c: [
            r.body["message"]["text"]
            for r in bot.acknowledged()
            if r.body["message"]["chat"]["id"] == c
        ]
        for c in chats
    }
    assert got == sent

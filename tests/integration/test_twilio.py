"""`format: twilio` (plugins/twilio): Twilio's Messaging webhook taken as
Twilio sends it, against the real app, a real Redis-compatible server and
a real bot. The payloads are those of Twilio's documentation ("Twilio's
request to your incoming message Webhook URL", the WhatsApp guide's
incoming message, a status callback); each signature is computed here as
Twilio's "Secure webhooks" page says, and checked against the known answer
that page's example gives. docs/twilio.md."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
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

PATH = "/webhooks/twilio"
TOKEN = "twilio-auth-token-1"
# Where Twilio calls the router (through a proxy): what it signs.
PUBLIC_URL = "https://router.example.com/webhooks/twilio"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

ROUTES = """
routes:
  - path: /webhooks/twilio
    format: twilio
    format_options:
      auth_token: twilio-auth-token-1
      public_url: https://router.example.com/webhooks/twilio
      statuses: {statuses}
    destinations: [chatbot]
    dedup_ttl: 1d
destinations:
  chatbot:
    plugin: http
    url: {bot_url}
    ordering_key: From
    timeout: 2s
    lease: 5s
    retry: {{initial: 50ms, max_delay: 200ms}}
  receipts:
    plugin: http
    url: {bot_url}
    ordering_key: To
    timeout: 2s
    lease: 5s
"""

# An incoming WhatsApp message over Twilio, as Twilio's WhatsApp guide shows
# the parameters of one (the sandbox's number as To).
WHATSAPP = [
    ("SmsMessageSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("NumMedia", "0"),
    ("ProfileName", "Ana"),
    ("MessageType", "text"),
    ("SmsSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("WaId", "14017122661"),
    ("SmsStatus", "received"),
    ("Body", "Hola! ¿Qué tal? 100% & más"),
    ("To", "whatsapp:+14155238886"),
    ("NumSegments", "1"),
    ("ReferralNumMedia", "0"),
    ("MessageSid", "SM1f0e8ae6ade43cb3c0ce4525424e404f"),
    ("AccountSid", "AC00000000000000000000000000000000"),
    ("From", "whatsapp:+14017122661"),
    ("ApiVersion", "2010-04-01"),
]

# An incoming SMS, with the parameters of Twilio's incoming message webhook
# table (their example values).
SMS = [
    ("MessageSid", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("SmsSid", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("AccountSid", "AC00000000000000000000000000000000"),
    ("MessagingServiceSid", "MG00000000000000000000000000000000"),
    ("From", "+14017122661"),
    ("To", "+15558675310"),
    ("Body", "Ahoy! We can't wait to see what you build."),
    ("NumMedia", "0"),
    ("NumSegments", "1"),
    ("FromCity", "SAN FRANCISCO"),
    ("FromState", "CA"),
    ("FromZip", "94103"),
    ("FromCountry", "US"),
    ("ApiVersion", "2010-04-01"),
]

# A status callback of a message the bot sent.
DELIVERED = [
    ("MessageSid", "SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ("SmsSid", "SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ("AccountSid", "AC00000000000000000000000000000000"),
    ("MessageStatus", "delivered"),
    ("SmsStatus", "delivered"),
    ("From", "whatsapp:+14155238886"),
    ("To", "whatsapp:+14017122661"),
    ("ApiVersion", "2010-04-01"),
]


def twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """As Twilio's "Secure webhooks" page says: the full URL, then each POST
    parameter sorted by name, name and value with no separator; HMAC-SHA1
    keyed with the auth token; base64. A name's values sorted and each once,
    as twilio-python's RequestValidator.compute_signature does
    (`sorted(set(values))`)."""
    text = url
    for name in sorted({n for n, _ in params}):
        for value in sorted({v for n, v in params if n == name}):
            text += name + value
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def test_the_signature_here_is_twilios() -> None:
    # The example of Twilio's security page, with its published signature.
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def post(
    base: str,
    params: list[tuple[str, str]],
    signature: str | None = "",
    url: str = PUBLIC_URL,
    token: str = TOKEN,
) -> httpx.Response:
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature == "":
        signature = twilio_signature(token, url, params)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return httpx.post(base + PATH, content=body, headers=headers)


def lane(redis: Redis, destination: str, key: str) -> list[dict[str, Any]]:
    raw = redis.lrange(DestinationKeys(destination).lane(key), 0, -1)
    return [json.loads(bytes(decode(r).body)) for r in raw]


def nothing_stored(redis: Redis) -> bool:
    return [k for k in stored_keys(redis) if not k.endswith(b":counts")] == []


def assert_twiml(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml"), response.headers
    assert response.text == EMPTY_TWIML


@pytest.fixture()
def routes(tmp_path: Path) -> Any:
    def write(statuses: str = "drop", bot_url: str = "http://127.0.0.1:9/bot") -> Path:
        return write_yaml(tmp_path, ROUTES.format(statuses=statuses, bot_url=bot_url))

    return write


@pytest.fixture()
def api(clean_redis: str, routes: Any) -> Iterator[str]:
    with serve(clean_redis, routes()) as server:
        yield server.url


# -- the signature ----------------------------------------------------------------


def test_a_request_without_a_signature_is_refused(api: str, redis: Redis) -> None:
    assert_refused(post(api, WHATSAPP, signature=None), 401, "X-Twilio-Signature")
    assert nothing_stored(redis)


def test_a_wrong_signature_is_refused_and_nothing_stored(api: str, redis: Redis) -> None:
    assert_refused(post(api, WHATSAPP, token="another-token"), 401, "does not match")
    # Signed over the URL the router itself sees, not the public one Twilio calls.
    assert_refused(post(api, WHATSAPP, url=api + PATH), 401, "public_url")
    # A parameter changed after signing.
    signature = twilio_signature(TOKEN, PUBLIC_URL, WHATSAPP)
    changed = [(k, "Adiós" if k == "Body" else v) for k, v in WHATSAPP]
    assert_refused(post(api, changed, signature=signature), 401)
    assert nothing_stored(redis)


def test_the_url_with_its_default_port_is_signed_too(api: str, redis: Redis) -> None:
    """Twilio's helper libraries accept the URL with and without :443."""
    with_port = "https://router.example.com:443/webhooks/twilio"
    assert_twiml(post(api, WHATSAPP, url=with_port))
    assert len(lane(redis, "chatbot", "whatsapp:+14017122661")) == 1


def test_a_repeated_pair_is_signed_once_as_twilios_helpers_do(api: str, redis: Redis) -> None:
    """An identical (name, value) pair sent twice counts once in the
    signature; a name with different values counts each, sorted."""
    repeated = [*WHATSAPP, ("Tag", "b"), ("Tag", "a"), ("Tag", "b")]
    assert_twiml(post(api, repeated))
    (stored,) = lane(redis, "chatbot", "whatsapp:+14017122661")
    assert stored["Tag"] == ["b", "a", "b"]  # stored as sent
    # Signed with the pair twice, as a helper that kept it would: refused.
    text = PUBLIC_URL + "".join(n + v for n, v in sorted(repeated))
    kept = base64.b64encode(hmac.new(TOKEN.encode(), text.encode(), hashlib.sha1).digest())
    assert_refused(post(api, repeated, signature=kept.decode()), 401, "does not match")


# -- what is stored -----------------------------------------------------------------


def test_a_whatsapp_message_is_stored_by_its_sender_and_answered_with_twiml(
    api: str, redis: Redis
) -> None:
    assert_twiml(post(api, WHATSAPP))
    (stored,) = lane(redis, "chatbot", "whatsapp:+14017122661")
    assert stored == dict(WHATSAPP)  # every parameter, decoded, as a JSON object


def test_an_sms_is_stored_by_its_sender(api: str, redis: Redis) -> None:
    assert_twiml(post(api, SMS))
    (stored,) = lane(redis, "chatbot", "+14017122661")
    assert stored["Body"] == "Ahoy! We can't wait to see what you build."
    assert stored["FromCity"] == "SAN FRANCISCO"


def test_a_redelivered_message_is_stored_once(api: str, redis: Redis) -> None:
    assert_twiml(post(api, WHATSAPP))
    assert_twiml(post(api, WHATSAPP))  # Twilio's retry: same MessageSid
    assert len(lane(redis, "chatbot", "whatsapp:+14017122661")) == 1


def test_a_json_body_is_not_twilios(api: str, redis: Redis) -> None:
    body = json.dumps(dict(WHATSAPP)).encode()
    r = httpx.post(
        api + PATH,
        content=body,
        headers={"X-Twilio-Signature": twilio_signature(TOKEN, PUBLIC_URL, [])},
    )
    # Refused before the signature could be checked over form parameters.
    assert_refused(r, 400, "form-encoded")
    assert nothing_stored(redis)


def test_a_form_without_account_sid_is_refused(api: str, redis: Redis) -> None:
    params = [(k, v) for k, v in SMS if k != "AccountSid"]
    assert_refused(post(api, params), 400, "AccountSid")
    assert nothing_stored(redis)


def test_a_message_without_its_sid_is_skipped_and_kept(api: str, redis: Redis) -> None:
    params = [(k, v) for k, v in SMS if k not in ("MessageSid", "SmsSid")]
    assert_twiml(post(api, params))  # answered 200: Twilio would not send it again
    assert lane(redis, "chatbot", "+14017122661") == []
    keys = RouteKeys(route_key(PATH))
    (kept,) = redis.lrange(keys.unroutable, 0, -1)
    kept_item = json.loads(kept)
    assert kept_item["reason"] == "message.MessageSid"
    assert kept_item["item"]["From"] == "+14017122661"


def test_status_callbacks_are_dropped_by_default(api: str, redis: Redis) -> None:
    assert_twiml(post(api, DELIVERED))
    assert nothing_stored(redis)


def test_status_callbacks_go_to_their_destination_by_recipient(
    clean_redis: str, routes: Any, redis: Redis
) -> None:
    with serve(clean_redis, routes(statuses="receipts")) as server:
        assert_twiml(post(server.url, DELIVERED))
        assert_twiml(post(server.url, DELIVERED))  # the same status again: a duplicate
        read = [(k, "read" if k in ("MessageStatus", "SmsStatus") else v) for k, v in DELIVERED]
        assert_twiml(post(server.url, read))  # another step of the same message
    statuses = lane(redis, "receipts", "whatsapp:+14017122661")
    assert [s["MessageStatus"] for s in statuses] == ["delivered", "read"]
    assert lane(redis, "chatbot", "whatsapp:+14017122661") == []


def test_public_url_must_be_a_full_url(tmp_path: Path) -> None:
    file = write_yaml(tmp_path, ROUTES.format(statuses="drop", bot_url="http://127.0.0.1:9/b"))
    file.write_text(file.read_text().replace(PUBLIC_URL, "/webhooks/twilio"))
    with pytest.raises(ConfigError, match="public_url"):
        load(str(file))


def test_the_schema_says_what_twilio_sends_and_gets(api: str) -> None:
    operation = httpx.get(api + "/schema/openapi.json").json()["paths"][PATH]["post"]
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    answer = operation["responses"]["200"]["content"]["text/xml"]
    assert answer["example"] == EMPTY_TWIML
    names = [p["name"] for p in operation["parameters"]]
    assert "X-Twilio-Signature" in names
    # A duplicate gets TwiML too: the description says so, not the JSON answer's words.
    assert "gets the same answer" in operation["description"]
    assert "duplicate: true" not in operation["description"]


# -- delivered end to end ------------------------------------------------------------


def test_messages_reach_the_bot_in_order_per_sender(clean_redis: str, routes: Any, bot: Bot):
    ana, ben = "whatsapp:+14017122661", "+15005550006"
    sent: dict[str, list[str]] = {ana: [], ben: []}
    with serve(clean_redis, routes(bot_url=bot.url), run_workers=True) as server:
        for i in range(5):
            for sender in (ana, ben):
                text = f"{sender[-4:]}-{i}"
                sent[sender].append(text)
                params = [
                    ("MessageSid", f"SM{sender[-4:]}{i:028d}"),
                    ("AccountSid", "AC00000000000000000000000000000000"),
                    ("From", sender),
                    ("To", "whatsapp:+14155238886"),
                    ("Body", text),
                    ("NumMedia", "0"),
                ]
                assert_twiml(post(server.url, params))
        wait_until(lambda: len(bot.acknowledged()) >= 10, what="10 messages delivered")
    got = {s: [r.body["Body"] for r in bot.acknowledged() if r.body["From"] == s] for s in sent}
    assert got == sent

"""Outbound webhooks through the built-in `http` plugin (docs/outbound-webhooks.md):
a real server on loopback receives the method, the headers (a ${VAR} from
the environment among them), the reshaped body and a Standard Webhooks
signature it verifies with the router's own ingest verifier and with the
`standardwebhooks` reference package; a status outside success_statuses
fails the attempt and it is retried; configured secrets stay out of the
failure reasons the router logs and keeps."""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from router.config import AuthSettings
from router.http.auth import Authenticator
from router.queue.keys import DestinationKeys
from tests.support.bot import read_request
from tests.support.servers import ServerThread, wait_until

KEY = base64.b64encode(b"outbound-signing-key-0123456789ab").decode()  # 33 bytes
WHSEC = "whsec_" + KEY
TOKEN = "tok-5f1d9c0e-outbound-secret"
KEYS = DestinationKeys("hook")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP service on loopback that records each request with its raw
    body and answers with the next of `statuses` (the last one repeats)."""

    def __init__(self, statuses: list[int], answer: str = '{"ok": true}') -> None:
        self.statuses = statuses
        self.answer = answer
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.server: ServerThread | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await read_request(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.seen.append(Seen(scope["method"], scope["path"], headers, b"".join(chunks)))
            status = self.statuses[min(len(self.seen), len(self.statuses)) - 1]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": self.answer.encode()})

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/hooks/in"


@pytest.fixture()
def receiver() -> Any:
    made: list[Receiver] = []

    def start(statuses: list[int], answer: str = '{"ok": true}') -> Receiver:
        r = Receiver(statuses, answer)
        r.server = ServerThread(r).start()
        made.append(r)
        return r

    yield start
    for r in made:
        assert r.server is not None
        r.server.stop()


def routes(
    tmp_path: Path,
    url: str,
    extra: str,
    retry: str = "50ms",
    max_attempts: int | None = None,
    on_exhausted: str | None = None,
) -> Path:
    """One route to the destination `hook` (plugin http at `url`), with
    `extra` option lines and a fixed retry delay."""
    attempts = "" if max_attempts is None else f", max_attempts: {max_attempts}"
    if on_exhausted is not None:
        attempts += f", on_exhausted: {on_exhausted}"
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"""\
routes:
  - path: /v1/store_message
    destinations: [hook]
    fields: {{mensaje: string, wa_id: string}}
destinations:
  hook:
    plugin: http
    url: {url}
    ordering_key: wa_id
    timeout: 2s
    lease: 5s
    retry: {{initial: {retry}, factor: 1, max_delay: {retry}, jitter: 0{attempts}}}
{extra}"""
    )
    return path


SIGNED = """\
    method: put
    headers:
      Authorization: Bearer ${OUTBOUND_TOKEN}
      X-Tenant: acme
    signing:
      type: standard-webhooks
      secret: ${OUTBOUND_WHSEC}
    body:
      to: wa_id
      text: mensaje
      contact:
        name: profile.name
        nickname: profile.nickname?
      first_tag: tags[0]
      last_tag: tags[-1]
      channel: const:whatsapp
      version: 2
      original: $
"""


def verify_both_ways(seen: Seen) -> None:
    """The signature as the router's ingest checks it, and as the
    reference implementation (standardwebhooks on PyPI) does."""
    Authenticator(AuthSettings(type="standard-webhooks", secret=WHSEC)).check(
        seen.headers, seen.body
    )
    standardwebhooks = pytest.importorskip("standardwebhooks")
    standardwebhooks.Webhook(WHSEC).verify(seen.body, seen.headers)


def test_put_with_env_headers_reshaped_body_and_a_verified_signature(
    receiver, start_router, tmp_path, monkeypatch
):
    monkeypatch.setenv("OUTBOUND_TOKEN", TOKEN)
    monkeypatch.setenv("OUTBOUND_WHSEC", WHSEC)
    service = receiver([200])
    router = start_router("", routes_file=routes(tmp_path, service.url, SIGNED))
    message = {
        "mensaje": "Hola!",
        "wa_id": "44912345678",
        "profile": {"name": "Ana"},
        "tags": ["a", "b", "c"],
    }
    answer = router.post(message)
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["id"]
    wait_until(lambda: len(service.seen) == 1, what="the delivery")

    (seen,) = service.seen
    assert seen.method == "PUT" and seen.path == "/hooks/in"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"  # ${VAR} from the environment
    assert seen.headers["x-tenant"] == "acme"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["webhook-id"] == message_id == seen.headers["idempotency-key"]
    assert seen.headers["webhook-signature"].startswith("v1,")
    assert json.loads(seen.body) == {
        "to": "44912345678",
        "text": "Hola!",
        "contact": {"name": "Ana"},  # the optional nickname is left out
        "first_tag": "a",
        "last_tag": "c",
        "channel": "whatsapp",
        "version": 2,
        "original": message,
    }
    verify_both_ways(seen)


def test_without_body_the_bytes_go_out_as_received_and_signed(
    receiver, start_router, tmp_path, monkeypatch
):
    monkeypatch.setenv("OUTBOUND_WHSEC", WHSEC)
    service = receiver([200])
    extra = "    signing: {type: standard-webhooks, secret: '${OUTBOUND_WHSEC}'}\n"
    router = start_router("", routes_file=routes(tmp_path, service.url, extra))
    raw = b'{ "wa_id" : "1",  "mensaje": "caf\\u00e9 \xf0\x9f\x98\x80", "n": 1.50 }'
    assert router.post(raw, headers={"content-type": "application/json"}).status_code == 200
    wait_until(lambda: len(service.seen) == 1, what="the delivery")
    (seen,) = service.seen
    assert seen.method == "POST"  # the default
    assert seen.body == raw  # never re-encoded
    verify_both_ways(seen)


def test_a_status_outside_success_statuses_is_retried_with_the_same_id_and_a_new_timestamp(
    receiver, start_router, tmp_path, monkeypatch, redis: redis_sync.Redis
):
    """200 is a 2xx, but this service acknowledges with 202 only: the
    first answer fails the attempt, the retry (1 s later) is accepted."""
    monkeypatch.setenv("OUTBOUND_WHSEC", WHSEC)
    service = receiver([200, 202])
    extra = (
        "    success_statuses: [202, 409]\n"
        "    signing: {type: standard-webhooks, secret: '${OUTBOUND_WHSEC}'}\n"
    )
    router = start_router("", routes_file=routes(tmp_path, service.url, extra, retry="1s"))
    assert router.post({"mensaje": "m1", "wa_id": "7"}).status_code == 200
    wait_until(lambda: len(service.seen) == 2, what="the retry")
    wait_until(lambda: redis.hget(KEYS.counts, "acked") == b"1", what="the ack")
    first, second = service.seen
    assert second.headers["x-router-attempt"] == "2"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert first.body == second.body
    for seen in service.seen:
        verify_both_ways(seen)  # each attempt signed with its own timestamp


def test_configured_secrets_never_reach_the_failure_reason_or_the_log(
    receiver, start_router, tmp_path, monkeypatch, redis: redis_sync.Redis, caplog
):
    """A service that echoes what it got (as many do in a 4xx) would put the
    Authorization header and the secret into the reason the router logs,
    keeps per key (router status) and puts in dead letters: starred out."""
    monkeypatch.setenv("OUTBOUND_TOKEN", TOKEN)
    monkeypatch.setenv("OUTBOUND_WHSEC", WHSEC)
    echo = json.dumps({"error": "denied", "got": f"Bearer {TOKEN}", "token": TOKEN, "k": WHSEC})
    service = receiver([401], answer=echo)
    extra = (
        "    headers: {Authorization: 'Bearer ${OUTBOUND_TOKEN}'}\n"
        "    signing: {type: standard-webhooks, secret: '${OUTBOUND_WHSEC}'}\n"
    )
    path = routes(tmp_path, service.url, extra, max_attempts=2)
    caplog.set_level(logging.INFO)
    router = start_router("", routes_file=path)
    assert router.post({"mensaje": "m1", "wa_id": "9"}).status_code == 200
    wait_until(lambda: redis.llen(KEYS.dead) == 1, what="the dead letter")
    letter = redis.lindex(KEYS.dead, 0)
    assert letter is not None
    text = letter.decode() + caplog.text
    assert "HTTP 401" in text and "denied" in text and "***" in text
    for secret in (TOKEN, WHSEC, KEY):
        assert secret not in text


def test_a_missing_required_path_dead_letters_the_message_at_once_and_its_key_goes_on(
    receiver, start_router, tmp_path, redis: redis_sync.Redis
):
    """No retry can add a field to a stored message: it is a permanent
    failure, dead-lettered after its one attempt (retry policy without
    max_attempts: before, it was retried forever and held up its key), and
    the next message of the same conversation is delivered."""
    service = receiver([200])
    extra = "    body: {to: wa_id, name: profile.name}\n"
    router = start_router("", routes_file=routes(tmp_path, service.url, extra))
    assert router.post({"mensaje": "m1", "wa_id": "3"}).status_code == 200
    second = {"mensaje": "m2", "wa_id": "3", "profile": {"name": "Ana"}}
    assert router.post(second).status_code == 200
    wait_until(lambda: len(service.seen) == 1, what="the second message delivered")
    assert json.loads(service.seen[0].body) == {"to": "3", "name": "Ana"}
    assert redis.llen(KEYS.dead) == 1
    letter = json.loads(redis.lindex(KEYS.dead, 0))
    assert letter["attempts"] == 1
    assert "body.name: the message has no profile.name" in letter["error"]
    assert '"mensaje":"m1"' in letter["envelope"]
    assert not redis.hexists(KEYS.blocked, "3")


def test_a_missing_required_path_blocks_its_key_with_on_exhausted_block(
    receiver, start_router, tmp_path, redis: redis_sync.Redis
):
    service = receiver([200])
    extra = "    body: {to: wa_id, name: profile.name}\n"
    path = routes(tmp_path, service.url, extra, on_exhausted="block")
    router = start_router("", routes_file=path)
    assert router.post({"mensaje": "m1", "wa_id": "3"}).status_code == 200
    assert router.post({"mensaje": "m2", "wa_id": "3", "profile": {"name": "A"}}).status_code == 200
    other = {"mensaje": "m3", "wa_id": "4", "profile": {"name": "Bo"}}
    assert router.post(other).status_code == 200
    wait_until(lambda: redis.hexists(KEYS.blocked, "3"), what="key 3 blocked")
    blocked = json.loads(redis.hget(KEYS.blocked, "3"))
    assert blocked["attempts"] == 1
    assert "body.name: the message has no profile.name" in blocked["error"]
    wait_until(lambda: len(service.seen) == 1, what="the other key's message delivered")
    assert json.loads(service.seen[0].body) == {"to": "4", "name": "Bo"}
    assert redis.llen(KEYS.dead) == 0
    assert redis.llen(KEYS.lane("3")) == 2  # both kept, in order, until unblocked

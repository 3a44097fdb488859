"""The API documents: GET /schema/openapi.json describes what the running
router really does (each route's body from routes.yaml, its headers, every
answer with the JSON body the router really sends, the admin API's bearer
auth), and the docs page at GET /schema loads only what the router itself
serves, so it works offline."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from router.config.loading import load
from router.config.settings import Settings
from router.http.server import protocol_class
from router.web.app import create_app
from router.web.openapi.document import ASSETS_DIR
from tests.support import ROOT
from tests.support import whatsapp as wa
from tests.support.routes import write_yaml
from tests.support.servers import ServerThread, free_port


def validate(doc: Any) -> None:
    """openapi_spec_validator's validate, imported at the first call: every
    parallel pytest worker collects this file, few run these tests (0.2 s
    of CPU each)."""
    from openapi_spec_validator import validate as validate_openapi

    validate_openapi(doc)


TOKEN = "admin-token-6f1e"
HMAC_SECRET = "hmac-secret-93b2"
HEADER_SECRET = "header-secret-27d4"
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-5c0a").decode()
WA_TOKEN = "wa-verify-token-71c3"
SECRETS = [TOKEN, HMAC_SECRET, HEADER_SECRET, SW_SECRET, SW_SECRET.removeprefix("whsec_")]

ROUTES = f"""
routes:
  - path: /v1/store_message
    destinations: [chatbot]
    fields: {{mensaje: string, wa_id: string}}
  - path: /hooks/github
    destinations: [chatbot, crm]
    fields: {{action: string}}
    max_body: 2KiB
    auth: {{type: hmac-sha256, secret: "{HMAC_SECRET}"}}
  - path: /hooks/svix
    destinations: [crm]
    id_field: event_id
    auth: {{type: standard-webhooks, secret: "{SW_SECRET}"}}
  - path: /hooks/token
    destinations: [chatbot]
    fields: {{wa_id: integer, text: any}}
    max_string_length: 100
    auth: {{type: header, secret: "{HEADER_SECRET}"}}
    rate_limit: {{requests: 1, period: 1h, per: wa_id}}

destinations:
  chatbot: {{plugin: chatbot, url: "http://127.0.0.1:9/bot", ordering_key: wa_id}}
  crm: {{plugin: http, url: "http://127.0.0.1:9/crm"}}
"""

# What each route must answer and what its body needs (from ROUTES).
ANSWERS = {
    "/v1/store_message": {"200", "400", "408", "413", "503"},
    "/hooks/github": {"200", "400", "401", "408", "413", "503"},
    "/hooks/svix": {"200", "400", "401", "408", "413", "503"},
    "/hooks/token": {"200", "400", "401", "408", "413", "429", "503"},
}
REQUIRED = {
    "/v1/store_message": {"mensaje", "wa_id"},
    "/hooks/github": {"action", "wa_id"},  # wa_id: chatbot's ordering key
    "/hooks/svix": set(),
    "/hooks/token": {"wa_id", "text"},
}


def start(routes: Path, redis_url: str, admin_token: str | None) -> ServerThread:
    """The router's app as `router api` serves it: its own HTTP protocol
    (JSON answers to malformed HTTP), API only."""
    settings = Settings(
        routes_file=str(routes), redis_url=redis_url, run_workers=False, admin_token=admin_token
    )
    http = protocol_class(settings.header_timeout, settings.max_pending_connections, "h11")
    return ServerThread(create_app(settings, load(str(routes))), http=http).start()


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_yaml(tmp_path_factory.mktemp("openapi"), ROUTES)


@pytest.fixture(scope="module")
def router(routes: Path, redis_url: str) -> Iterator[str]:
    with start(routes, redis_url, TOKEN) as server:
        yield server.url


@pytest.fixture(scope="module")
def doc(router: str) -> dict[str, Any]:
    r = httpx.get(router + "/schema/openapi.json")
    assert r.status_code == 200, r.text
    return dict(r.json())


# A value of the wrong JSON type for the field on every route that requires it.
WRONG_TYPE: dict[str, Any] = {"mensaje": 5, "action": ["x"], "wa_id": {"id": 1}}


def body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])


def parameters(doc: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["paths"][path]["post"].get("parameters", [])}


def assert_documented(
    doc: dict[str, Any], method: str, path: str, answer: httpx.Response
) -> dict[str, Any]:
    """`answer` is one the document lists for this operation: its status,
    a JSON body valid against the documented schema, the documented
    headers. Returns the documented response."""
    responses = doc["paths"][path][method]["responses"]
    status = str(answer.status_code)
    assert status in responses, (path, status, answer.text)
    documented = responses[status]
    schema = documented["content"]["application/json"]["schema"]
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    # The admin answers' schemas are components ($ref), resolved in the document.
    jsonschema.validate(answer.json(), {**schema, "components": doc.get("components", {})})
    for header in documented.get("headers", {}):
        assert header.lower() in answer.headers, (path, status, header, answer.headers)
    return dict(documented)


def examples(response: dict[str, Any]) -> list[Any]:
    media = response["content"]["application/json"]
    return [e["value"] for e in media.get("examples", {}).values()]


# -- the document ---------------------------------------------------------------


def test_the_document_is_valid_openapi_in_json_and_yaml(router: str, doc: dict[str, Any]) -> None:
    validate(doc)
    as_yaml = httpx.get(router + "/schema/openapi.yaml")
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.text) == doc


def test_every_route_of_routes_yaml_is_documented_with_its_body(
    doc: dict[str, Any], routes: Path
) -> None:
    config = load(str(routes))
    documented = {
        p for p, item in doc["paths"].items() if item.get("post", {}).get("tags") == ["ingest"]
    }
    assert documented == {r.path for r in config.routes}
    for route in config.routes:
        operation = doc["paths"][route.path]["post"]
        assert operation["requestBody"]["required"] is True
        schema = body_schema(doc, route.path)
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is True  # extra fields pass through
        assert set(schema.get("required", [])) == REQUIRED[route.path]
        assert f"{route.settings.max_body} bytes" in schema["description"]
    token = body_schema(doc, "/hooks/token")
    assert token["properties"]["wa_id"]["type"] == "integer"
    assert "100 characters" in token["description"]  # max_string_length
    svix = body_schema(doc, "/hooks/svix")
    assert "event_id" in svix["properties"]  # id_field: optional, documented


@pytest.mark.parametrize("path", list(REQUIRED))
def test_the_documented_body_schema_agrees_with_the_router(
    router: str, doc: dict[str, Any], path: str, clean_redis: str
) -> None:
    """A body without a required field, or with one of the wrong type,
    fails the documented schema and the router refuses it with 400; a
    body with them all passes both."""
    schema = body_schema(doc, path)
    good = {"mensaje": "hola", "wa_id": "44912345678", "action": "opened", "text": 1}
    if path == "/hooks/token":
        good["wa_id"] = 44912345678
    jsonschema.validate(good, schema)
    bodies = [(f, {k: v for k, v in good.items() if k != f}) for f in REQUIRED[path]]
    bodies += [(f, {**good, f: WRONG_TYPE[f]}) for f in REQUIRED[path] if f in WRONG_TYPE]
    for field, bad in bodies:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        answer = httpx.post(router + path, content=json.dumps(bad), headers=signed(path, bad))
        assert answer.status_code == 400, answer.text
        assert f"`{field}`" in answer.json()["error"]
    answer = httpx.post(router + path, content=json.dumps(good), headers=signed(path, good))
    assert answer.status_code == 200, answer.text
    assert_documented(doc, "post", path, answer)


def signed(path: str, body: Any) -> dict[str, str]:
    """The headers that pass the route's auth for this body."""
    raw = json.dumps(body).encode()
    if path == "/hooks/github":
        digest = hmac.new(HMAC_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if path == "/hooks/token":
        return {"X-Router-Token": HEADER_SECRET}
    if path == "/hooks/svix":
        msg_id, ts = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", str(int(time.time()))
        key = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    return {}


def test_each_route_documents_the_headers_it_honours(doc: dict[str, Any]) -> None:
    for path in REQUIRED:
        assert {"traceparent", "tracestate"} <= set(parameters(doc, path))
    assert "Idempotency-Key" in parameters(doc, "/v1/store_message")
    # hmac-sha256: the signature header, required.
    assert parameters(doc, "/hooks/github")["X-Hub-Signature-256"]["required"] is True
    # standard-webhooks: its three headers; webhook-id is the dedup id there.
    svix = parameters(doc, "/hooks/svix")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert svix[name]["required"] is True, name
    assert "Idempotency-Key" not in svix
    # header: an apiKey security scheme naming the header.
    (requirement,) = doc["paths"]["/hooks/token"]["post"]["security"]
    (scheme_name,) = requirement
    scheme = doc["components"]["securitySchemes"][scheme_name]
    assert scheme["type"] == "apiKey"
    assert (scheme["in"], scheme["name"]) == ("header", "X-Router-Token")
    assert "security" not in doc["paths"]["/v1/store_message"]["post"]


def test_each_route_documents_every_answer_it_can_give(doc: dict[str, Any]) -> None:
    for path, statuses in ANSWERS.items():
        responses = doc["paths"][path]["post"]["responses"]
        assert set(responses) == statuses, path
        for status, response in responses.items():
            schema = response["content"]["application/json"]["schema"]
            assert set(schema["required"]) >= (
                {"status", "id", "duplicate"} if status == "200" else {"status", "error"}
            )
            for example in examples(response):
                jsonschema.validate(example, schema)
        assert "Retry-After" in responses["503"]["headers"]
        assert set(
            responses["503"]["content"]["application/json"]["schema"]["properties"]["stored"][
                "enum"
            ]
        ) == {"no", "unknown"}
    assert "Retry-After" in doc["paths"]["/hooks/token"]["post"]["responses"]["429"]["headers"]


def test_documented_errors_are_what_the_router_answers(
    router: str, doc: dict[str, Any], clean_redis: str
) -> None:
    """Make the router give each error; its answer is the documented one."""

    def post(path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(router + path, content=content, headers=headers)

    # 400: invalid JSON.
    assert_documented(doc, "post", "/v1/store_message", post("/v1/store_message", b'{"wa_id":'))
    # 401: no signature; the documented example is the router's own words.
    missing = post("/hooks/github", b'{"action": "opened", "wa_id": "1"}')
    documented = assert_documented(doc, "post", "/hooks/github", missing)
    assert missing.status_code == 401
    assert missing.json() in examples(documented)
    wrong = post("/hooks/token", b'{"wa_id": 1, "text": "x"}', {"X-Router-Token": "nope"})
    assert wrong.status_code == 401
    assert_documented(doc, "post", "/hooks/token", wrong)
    unsigned = post("/hooks/svix", b"{}")
    assert unsigned.status_code == 401
    assert_documented(doc, "post", "/hooks/svix", unsigned)
    # 413: over the route's max_body (2 KiB).
    big = {"action": "x", "wa_id": "1", "pad": "x" * 3000}
    too_large = post("/hooks/github", json.dumps(big).encode(), signed("/hooks/github", big))
    assert too_large.status_code == 413
    assert_documented(doc, "post", "/hooks/github", too_large)
    # 429 with Retry-After: the second message of a sender within the hour.
    message = {"wa_id": 7, "text": "hola"}
    headers = signed("/hooks/token", message)
    assert post("/hooks/token", json.dumps(message).encode(), headers).status_code == 200
    limited = post("/hooks/token", json.dumps(message).encode(), headers)
    assert limited.status_code == 429
    assert_documented(doc, "post", "/hooks/token", limited)


def test_malformed_http_gets_the_documented_400(router: str, doc: dict[str, Any]) -> None:
    """The HTTP server's own answer, before any route: the same error body."""
    port = int(router.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw
    schema = doc["paths"]["/v1/store_message"]["post"]["responses"]["400"]["content"][
        "application/json"
    ]["schema"]
    jsonschema.validate(json.loads(body), schema)


def test_with_redis_away_the_503s_are_the_documented_ones(routes: Path) -> None:
    with start(routes, f"redis://127.0.0.1:{free_port()}/0", TOKEN) as server:
        doc = httpx.get(server.url + "/schema/openapi.json").json()
        answer = httpx.post(server.url + "/v1/store_message", json={"mensaje": "x", "wa_id": "1"})
        assert answer.status_code == 503
        assert_documented(doc, "post", "/v1/store_message", answer)
        assert answer.json()["stored"] in ("no", "unknown")
        admin = httpx.get(
            server.url + "/admin/destinations", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert admin.status_code == 503
        assert_documented(doc, "get", "/admin/destinations", admin)
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert_documented(doc, "get", "/readyz", ready)


# -- a format route (format: whatsapp) ---------------------------------------------

WA_ROUTES = f"""
routes:
  - path: {wa.PATH}
    format: whatsapp
    format_options: {{verify_token: "{WA_TOKEN}", app_secret: "{wa.SECRET}", statuses: receipts}}
    destinations: [chatbot]
destinations:
  chatbot: {{plugin: chatbot, url: "http://127.0.0.1:9/bot", ordering_key: wa_id}}
  receipts: {{plugin: http, url: "http://127.0.0.1:9/r", ordering_key: wa_id}}
"""


@pytest.fixture(scope="module")
def wa_router(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[str]:
    routes = write_yaml(tmp_path_factory.mktemp("openapi-wa"), WA_ROUTES)
    with start(routes, redis_url, None) as server:
        yield server.url


@pytest.fixture(scope="module")
def wa_doc(wa_router: str) -> dict[str, Any]:
    r = httpx.get(wa_router + "/schema/openapi.json")
    assert r.status_code == 200, r.text
    validate(r.json())
    return dict(r.json())


def test_a_format_route_documents_metas_envelope_not_the_routers_json(
    wa_router: str, wa_doc: dict[str, Any], clean_redis: str
) -> None:
    """The POST body is Meta's webhook (the schema the plugin provides): a
    webhook Meta sends passes it and is stored; the router's own
    {mensaje, wa_id} body fails it, and the router refuses it too."""
    operation = wa_doc["paths"][wa.PATH]["post"]
    schema = body_schema(wa_doc, wa.PATH)
    assert schema["properties"]["object"] == {"const": "whatsapp_business_account"}
    assert set(schema["required"]) == {"object", "entry"}
    messages = schema["properties"]["entry"]["items"]["properties"]["changes"]["items"]
    messages = messages["properties"]["value"]["properties"]["messages"]["items"]
    # `from` may be empty or absent for a user with a username (from_user_id).
    assert set(messages["required"]) == {"id", "type"}
    assert {"from", "from_user_id"} <= set(messages["properties"])
    example = operation["requestBody"]["content"]["application/json"]["example"]
    jsonschema.validate(example, schema)
    sent = wa.envelope(
        [wa.value([wa.text("447700900001", "wamid.A1", "hola"), wa.image("4477", "wamid.B")])],
        [wa.value(statuses=[wa.status("wamid.OUT1", "read", "447700900001")])],
    )
    jsonschema.validate(sent, schema)
    for body in (example, sent):
        raw = json.dumps(body).encode()
        answer = httpx.post(wa_router + wa.PATH, content=raw, headers=wa.signed(raw))
        assert answer.status_code == 200, answer.text
        assert_documented(wa_doc, "post", wa.PATH, answer)
    assert len(answer.json()["messages"]) == 3
    plain = {"mensaje": "Hola!", "wa_id": "447700900001"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(plain, schema)
    raw = json.dumps(plain).encode()
    refused = httpx.post(wa_router + wa.PATH, content=raw, headers=wa.signed(raw))
    assert refused.status_code == 400
    documented = assert_documented(wa_doc, "post", wa.PATH, refused)
    assert refused.json() in examples(documented)  # the plugin's own words
    # The answer with a skipped item is the documented 200.
    broken = wa.text("447700900002", "wamid.C", "x")
    del broken["from"]
    raw = json.dumps(wa.envelope([wa.value([broken])])).encode()
    skipped = httpx.post(wa_router + wa.PATH, content=raw, headers=wa.signed(raw))
    assert skipped.json()["skipped"] == 1
    assert_documented(wa_doc, "post", wa.PATH, skipped)


def test_a_format_route_documents_its_signature_and_answers(
    wa_router: str, wa_doc: dict[str, Any]
) -> None:
    params = parameters(wa_doc, wa.PATH)
    assert params["X-Hub-Signature-256"]["required"] is True
    assert params["X-Hub-Signature-256"]["schema"]["pattern"] == "^sha256=[0-9a-fA-F]{64}$"
    assert "Idempotency-Key" not in params  # the message ids are the dedup ids
    assert {"traceparent", "tracestate"} <= set(params)
    responses = wa_doc["paths"][wa.PATH]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "408", "413", "503"}
    ok = responses["200"]["content"]["application/json"]["schema"]
    assert set(ok["required"]) == {"status", "messages", "skipped", "problems"}
    unsigned = httpx.post(wa_router + wa.PATH, content=b"{}")
    assert unsigned.status_code == 401
    assert unsigned.json() in examples(assert_documented(wa_doc, "post", wa.PATH, unsigned))
    assert "receipts" in wa_doc["paths"][wa.PATH]["post"]["description"]
    assert "answers 200 with `duplicate: true`" in wa_doc["paths"][wa.PATH]["post"]["description"]


def test_a_format_route_documents_metas_verification_handshake(
    wa_router: str, wa_doc: dict[str, Any]
) -> None:
    operation = wa_doc["paths"][wa.PATH]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(query) == {"hub.mode", "hub.verify_token", "hub.challenge"}
    ok = operation["responses"]["200"]["content"]
    assert list(ok) == ["text/plain"]
    params = {"hub.mode": "subscribe", "hub.verify_token": WA_TOKEN, "hub.challenge": "8812"}
    answer = httpx.get(wa_router + wa.PATH, params=params)
    assert answer.status_code == 200 and answer.text == "8812"
    assert answer.headers["content-type"].startswith("text/plain")
    refused = httpx.get(wa_router + wa.PATH, params={**params, "hub.verify_token": "wrong"})
    assert refused.status_code == 403
    assert_documented(wa_doc, "get", wa.PATH, refused)
    assert WA_TOKEN not in json.dumps(wa_doc) and wa.SECRET not in json.dumps(wa_doc)


# -- health and admin ------------------------------------------------------------


def test_health_answers_are_documented(router: str, doc: dict[str, Any], clean_redis: str) -> None:
    for path in ("/healthz", "/readyz"):
        answer = httpx.get(router + path, timeout=10)
        assert answer.status_code == 200, answer.text
        assert_documented(doc, "get", path, answer)


def test_the_admin_api_is_documented_with_its_bearer_auth(doc: dict[str, Any]) -> None:
    scheme = doc["components"]["securitySchemes"]["adminToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    admin = {p: item for p, item in doc["paths"].items() if p.startswith("/admin/")}
    assert len(admin) == 23  # README "Admin API"
    for path, item in admin.items():
        for method, operation in item.items():
            assert operation["security"] == [{"adminToken": []}], (path, method)
            unauthorized = operation["responses"]["401"]
            assert "WWW-Authenticate" in unauthorized["headers"], (path, method)
            assert "503" in operation["responses"], (path, method)
            if "{name}" in path:
                assert "404" in operation["responses"], (path, method)
    unblock = doc["paths"]["/admin/destinations/{name}/blocked/unblock"]["post"]
    body = unblock["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["key"] and body["properties"]["key"]["type"] == "string"
    for action in ("pause", "resume", "skip"):
        operation = doc["paths"][f"/admin/destinations/{{name}}/conversations/{action}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"] == ["key"], action
        assert {"400", "404"} <= set(operation["responses"]), action


def test_admin_answers_are_the_documented_ones(
    router: str, doc: dict[str, Any], clean_redis: str
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = router + "/admin/destinations"
    nobody = httpx.get(base)
    assert nobody.status_code == 401
    assert_documented(doc, "get", "/admin/destinations", nobody)
    stats = httpx.get(base, headers=auth)
    assert stats.status_code == 200
    assert_documented(doc, "get", "/admin/destinations", stats)
    unknown = httpx.post(base + "/nobody/pause", headers=auth)
    assert unknown.status_code == 404
    assert_documented(doc, "post", "/admin/destinations/{name}/pause", unknown)
    unblock = "/admin/destinations/{name}/blocked/unblock"
    bad_body = httpx.post(base + "/chatbot/blocked/unblock", headers=auth, content=b"[]")
    assert bad_body.status_code == 400
    assert_documented(doc, "post", unblock, bad_body)
    not_blocked = httpx.post(base + "/chatbot/blocked/unblock", headers=auth, json={"key": "a/b"})
    assert not_blocked.status_code == 404
    assert_documented(doc, "post", unblock, not_blocked)
    dead = httpx.get(base + "/chatbot/dead", headers=auth)
    assert dead.status_code == 200
    assert_documented(doc, "get", "/admin/destinations/{name}/dead", dead)
    bad_query = httpx.get(base + "/chatbot/dead?start=x", headers=auth)
    assert bad_query.status_code == 400
    assert_documented(doc, "get", "/admin/destinations/{name}/dead", bad_query)
    key_path = "/admin/destinations/{name}/key"
    for answer in (
        httpx.get(base + "/chatbot/key", params={"key": "a/b"}, headers=auth),
        httpx.get(base + "/chatbot/key", headers=auth),  # no key: 400
    ):
        assert_documented(doc, "get", key_path, answer)
    retry = "/admin/destinations/{name}/retry"
    for answer in (
        httpx.post(base + "/chatbot/retry", headers=auth),
        httpx.post(base + "/chatbot/retry", headers=auth, json={"keys": ["a/b"]}),
        httpx.post(base + "/chatbot/retry", headers=auth, json={"keys": []}),
    ):
        assert_documented(doc, "post", retry, answer)
    purge = "/admin/destinations/{name}/dead/purge"
    for answer in (
        httpx.post(base + "/chatbot/dead/purge", headers=auth),
        httpx.post(base + "/chatbot/dead/purge?count=0", headers=auth),
    ):
        assert_documented(doc, "post", purge, answer)
    # The message log: a search (200, 400 for each bad parameter, 404), a story (404).
    search = "/admin/destinations/{name}/messages"
    for query, status in [
        ("?key=a&outcome=failed&since=15m&limit=5", 200),
        ("?outcome=ok", 400),
        ("?since=yesterday", 400),
        ("?limit=0", 400),
        ("?limit=x", 400),
    ]:
        answer = httpx.get(base + "/chatbot/messages" + query, headers=auth)
        assert answer.status_code == status, (query, answer.text)
        assert_documented(doc, "get", search, answer)
    unknown = httpx.get(base + "/nobody/messages", headers=auth)
    assert unknown.status_code == 404
    assert_documented(doc, "get", search, unknown)
    stored = httpx.post(router + "/v1/store_message", json={"mensaje": "hi", "wa_id": "a"})
    assert stored.status_code == 200, stored.text
    for message_id, status in [(stored.json()["id"], 200), ("msg_nothing", 404)]:
        story = httpx.get(router + f"/admin/messages/{message_id}", headers=auth)
        assert story.status_code == status, story.text
        assert_documented(doc, "get", "/admin/messages/{id}", story)
    found = httpx.get(base + "/chatbot/messages", headers=auth)
    assert [m["state"] for m in found.json()["messages"]] == ["waiting"]
    assert_documented(doc, "get", search, found)


def test_without_the_token_the_admin_api_is_neither_documented_nor_there(
    routes: Path, redis_url: str
) -> None:
    with start(routes, redis_url, None) as server:
        doc = httpx.get(server.url + "/schema/openapi.json").json()
        validate(doc)
        assert not [p for p in doc["paths"] if p.startswith("/admin")]
        assert "adminToken" not in doc["components"].get("securitySchemes", {})
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            assert httpx.get(server.url + "/admin/destinations", headers=headers).status_code == 404


def test_the_documents_hold_no_secret(router: str) -> None:
    for path in ("/schema/openapi.json", "/schema/openapi.yaml", "/schema"):
        text = httpx.get(router + path).text
        for secret in SECRETS:
            assert secret not in text, (path, secret)


# -- the docs page -----------------------------------------------------------------


class References(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes,
    and the document's URL in Swagger UI's set-up (`url: "..."`)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data") and v]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)
            self.urls += re.findall(r"\burl:\s*\"([^\"]+)\"", data)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_only_the_routers_own_assets(
    router: str, doc: dict[str, Any], page: str
) -> None:
    answer = httpx.get(router + page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    refs = References()
    refs.feed(answer.text)
    assert refs.scripts, "no set-up script"
    assert not re.search(r"https?:|//", " ".join(refs.urls)), refs.urls
    assert "http:" not in answer.text and "https:" not in answer.text
    kinds = set()
    for url in refs.urls:
        assert url.startswith("/"), url
        asset = httpx.get(router + url)
        assert asset.status_code == 200, url
        assert asset.content, url
        kind = asset.headers["content-type"].split(";")[0]
        kinds.add(kind)
        if kind == "text/css":  # no web fonts or images from elsewhere
            assert not re.search(rb"url\(\s*['\"]?(https?:)?//|@import", asset.content), url
        if url.endswith("openapi.json"):
            assert asset.json() == doc
    assert {"text/css", "text/javascript", "application/vnd.oai.openapi+json"} <= kinds


def test_the_docs_assets_ship_in_the_package_with_their_licence() -> None:
    """pyproject.toml's package-data takes every file the page needs into
    the wheel (the page is served from the installed package)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["router.web"]
    shipped = {p.name for p in ASSETS_DIR.iterdir()}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"} <= shipped
    package = ROOT / "router" / "web"
    for path in ASSETS_DIR.iterdir():
        relative = str(path.relative_to(package))
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative

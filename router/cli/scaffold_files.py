"""The files `router new-plugin` writes (router.cli.scaffold), as text with
``{{name}}`` (the plugin's name), ``{{Name}}`` (its CamelCase) and
``{{kind}}`` filled in. The generated test is checked by running it:
tests/process/test_new_plugin.py."""

from __future__ import annotations

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "router-{{name}}"
version = "0.1.0"
description = "A {{kind}} plugin for message-router: `{{used}}: {{name}}` in routes.yaml"
requires-python = ">=3.11"
# The router brings msgspec and httpx, which the plugin uses too.
dependencies = ["message-router"]

[project.optional-dependencies]
test = ["pytest"]

# How the router finds the plugin: the entry point `{{name}}` in the group `router`.
[project.entry-points.router]
{{name}} = "router_{{name}}"

[tool.setuptools]
package-dir = {"" = "."}
packages = ["router_{{name}}"]

[tool.setuptools.package-data]
router_{{name}} = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

DELIVERY = '''\
"""router-{{name}}: a delivery plugin for message-router (`plugin: {{name}}`).

Each message is POSTed to the destination\'s `url`, its body exactly as it
was posted to the router, with its id, attempt and sequence as headers.
Make it yours: change the options and `deliver`. The rules a sink keeps
(docs/plugins.md of the router, "Sinks"):

- return only once the destination has the message: the router then
  acknowledges it; raise `DeliveryFailed` for any failure (the router
  retries the same message after a backoff, and the next message of its
  key waits: the order per key is the router\'s, never reorder);
- say whose fault a failure is: `message_fault=False` for the
  destination\'s own trouble (it counts toward the circuit breaker),
  `permanent=True` only when no retry of this message can ever succeed;
- reuse connections across messages (`context.http` is a shared httpx
  client); close what you opened in `aclose`.

It imports only `router.plugin`, the router\'s public plugin API.
"""

from __future__ import annotations

import httpx
import msgspec
from router.plugin import (
    Delivery,
    DeliveryFailed,
    DeliveryResponse,
    SinkContext,
    SinkType,
    hookimpl,
)


class {{Name}}Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The destination\'s own settings in routes.yaml, checked at start."""

    url: str  # where each message is POSTed


class {{Name}}Sink:
    def __init__(self, options: {{Name}}Options, context: SinkContext) -> None:
        self.options = options
        self.context = context

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.id,  # the same on every retry
            "X-Router-Attempt": str(delivery.attempt),
        }
        if delivery.sequence is not None:
            headers["X-Router-Sequence"] = str(delivery.sequence)
        try:
            response = await self.context.http.post(
                self.options.url,
                content=delivery.body,
                headers=headers,
                timeout=self.context.timeout,
            )
        except httpx.HTTPError as exc:
            # Unreachable, refused, timed out: the destination\'s trouble.
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", message_fault=False) from None
        if not 200 <= response.status_code < 300:
            retry_after = response.headers.get("retry-after", "")
            raise DeliveryFailed(
                f"HTTP {response.status_code}",
                float(retry_after) if retry_after.isdigit() else None,
                status=response.status_code,
                response=response.content[:1024],
            )
        return DeliveryResponse(status=response.status_code, body=response.content[:1024])

    async def aclose(self) -> None:
        pass  # nothing of its own to close: context.http is the router\'s


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="{{name}}",
            factory={{Name}}Sink,
            options={{Name}}Options,
            description="POST each message to `url` (router-{{name}})",
            circuit_breaker=True,  # a service that is down for everyone at once
        )
    ]
'''

INGEST = '''\
"""router-{{name}}: an ingest format for message-router (`format: {{name}}`).

A route with `format: {{name}}` takes the service\'s webhook: here a JSON
object `{"id": ..., "sender": ..., ...}` signed with `X-Signature: <hex
HMAC-SHA256 of the raw body, keyed with the route\'s secret>`. Each request
is one message: its body as posted, ordered by `sender` (its
conversation), deduplicated by `id` (a redelivery is stored once). Make
it yours: your service\'s signature, its envelope, the messages it
carries. The rules a format keeps (docs/plugins.md of the router,
"Ingest formats"):

- `authenticate` refuses with `Unauthorized` (401) before anything is read;
- `parse` raises `BadRequest` (400) for a request that is not the
  service\'s webhook at all, and `request.skip(...)`s one malformed item
  of a good request (answered 200, kept for `router unroutable`);
- an ordering key or id longer than `MAX_KEY_LENGTH` refuses the request:
  check what you read.

It imports only `router.plugin`, the router\'s public plugin API.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated

import msgspec
from router.plugin import (
    MAX_KEY_LENGTH,
    BadRequest,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    Unauthorized,
    hookimpl,
)

SIGNATURE_HEADER = "x-signature"


class {{Name}}Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The route\'s `format_options:` in routes.yaml, checked at start."""

    secret: Annotated[str, msgspec.Meta(min_length=1)]  # write it as ${VAR}


def authenticate(options: {{Name}}Options, headers: Mapping[str, str], body: bytes) -> None:
    expected = hmac.new(options.secret.encode(), body, hashlib.sha256).hexdigest()
    given = headers.get(SIGNATURE_HEADER, "").strip().lower()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-Signature")


def _text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= MAX_KEY_LENGTH else None


def parse(request: FormatRequest) -> list[IngestedMessage]:
    event = request.json()  # a JSON object, or the router\'s 400
    message_id = _text(event.get("id"))
    if message_id is None:
        raise BadRequest("id must be a non-empty string or number (not a {{name}} webhook?)")
    sender = _text(event.get("sender"))
    if sender is None:
        request.skip("event.sender", "sender must be a non-empty string", event, request.body)
        return []
    return [IngestedMessage(request.body, ordering_key=sender, dedup_id=message_id)]


@hookimpl
def router_ingest_formats() -> list[IngestFormat]:
    return [
        IngestFormat(
            name="{{name}}",
            parse=parse,
            options={{Name}}Options,
            authenticate=authenticate,
            description="{{name}} webhooks, signed, one message per request (router-{{name}})",
        )
    ]
'''

# What both generated tests share: the router as a subprocess, and an HTTP
# server that records what the router delivers.
TEST_COMMON = '''\
"""router-{{name}} against a real router: `router serve` run as a process
with its embedded Redis-compatible server in a temporary directory, the
installed plugin found through its entry point, messages posted over HTTP
and received by a real HTTP server of this test.

Run it where the router is installed, after `pip install -e .[test]`:
`pytest`.
"""

from __future__ import annotations

{{test_imports}}import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

NAME = "{{name}}"


@pytest.fixture(autouse=True, scope="session")
def installed() -> None:
    names = {e.name for e in importlib.metadata.entry_points(group="router")}
    if NAME not in names:
        pytest.fail(f"router-{NAME} is not installed here: pip install -e .[test]")


class Receiver:
    """An HTTP server on loopback recording each POST (headers, body); it
    answers each with the next status of `statuses`, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        receiver.received.append((headers, body))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/in"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[Any]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class Router:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture()
def start_router(tmp_path: Path) -> Iterator[Callable[[str], Router]]:
    """`router serve` with `routes` (routes.yaml\'s text); stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(routes: str) -> Router:
        (tmp_path / "routes.yaml").write_text(routes)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # embedded server
        env |= {
            "ROUTES_FILE": str(tmp_path / "routes.yaml"),
            "ROUTER_DATA_DIR": str(tmp_path / "data"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "ROUTER_SHUTDOWN_GRACE": "2",
        }
        with open(tmp_path / "router.log", "wb") as log:  # the child has its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "router", "serve"],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                text = (tmp_path / "router.log").read_text()
                raise AssertionError(f"router serve exited:\\n{text}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(ready, "router serve to be ready")
        return Router(url)

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
'''

TEST_DELIVERY = '''

ROUTES = """
routes:
  - path: /v1/messages
    destinations: [out]
destinations:
  out:
    plugin: {{name}}
    url: RECEIVER_URL
    ordering_key: user
    retry: {initial: 50ms, max_delay: 200ms}
"""

JSON = {"content-type": "application/json"}


def test_messages_are_delivered_as_posted_in_order(start_router, receiver) -> None:
    router = start_router(ROUTES.replace("RECEIVER_URL", receiver.url))
    ids = []
    for i in range(5):
        body = json.dumps({"user": "u1", "text": f"hello {i}"}).encode()
        status, answer = router.post("/v1/messages", body, JSON)
        assert status == 200, answer
        ids.append(answer["id"])
    wait_until(lambda: len(receiver.received) == 5, "5 deliveries")
    assert [b["text"] for b in receiver.bodies()] == [f"hello {i}" for i in range(5)]
    assert [h["idempotency-key"] for h, _ in receiver.received] == ids
    assert [h["x-router-sequence"] for h, _ in receiver.received] == ["1", "2", "3", "4", "5"]


def test_a_failed_attempt_is_retried(start_router, receiver) -> None:
    receiver.statuses = [503, 500]  # two failures, then 200
    router = start_router(ROUTES.replace("RECEIVER_URL", receiver.url))
    status, _ = router.post("/v1/messages", b\'{"user": "u2", "text": "again"}\', JSON)
    assert status == 200
    wait_until(lambda: len(receiver.received) == 1, "the delivery after two failures")
    headers, _ = receiver.received[0]
    assert headers["x-router-attempt"] == "3"
'''

TEST_INGEST = '''

SECRET = "test-secret"
ROUTES = """
routes:
  - path: /webhooks/{{name}}
    format: {{name}}
    format_options: {secret: test-secret}
    destinations: [out]
destinations:
  out:
    plugin: http
    url: RECEIVER_URL
    ordering_key: sender
    retry: {initial: 50ms, max_delay: 200ms}
"""


def signed(event: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"content-type": "application/json", "x-signature": signature}


def test_a_webhook_is_stored_once_and_delivered(start_router, receiver) -> None:
    router = start_router(ROUTES.replace("RECEIVER_URL", receiver.url))
    body, headers = signed({"id": "evt_1", "sender": "s1", "text": "hi"})
    status, answer = router.post("/webhooks/{{name}}", body, headers)
    assert status == 200, answer
    assert answer["messages"][0]["duplicate"] is False
    status, again = router.post("/webhooks/{{name}}", body, headers)  # a redelivery
    assert again["messages"] == [{"id": answer["messages"][0]["id"], "duplicate": True}]
    wait_until(lambda: len(receiver.received) == 1, "the delivery")
    assert receiver.received[0][1] == body  # the bytes as posted


def test_a_wrong_signature_is_refused(start_router, receiver) -> None:
    router = start_router(ROUTES.replace("RECEIVER_URL", receiver.url))
    body, headers = signed({"id": "evt_2", "sender": "s1"}, secret="another")
    status, answer = router.post("/webhooks/{{name}}", body, headers)
    assert status == 401 and answer["status"] == "error"
    body, headers = signed({"id": "evt_3", "sender": "s1"})
    assert router.post("/webhooks/{{name}}", body, headers)[0] == 200
    wait_until(lambda: len(receiver.received) == 1, "the signed one's delivery")
    assert [b["id"] for b in receiver.bodies()] == ["evt_3"]  # never the refused one


def test_a_webhook_without_a_sender_is_skipped(start_router, receiver) -> None:
    router = start_router(ROUTES.replace("RECEIVER_URL", receiver.url))
    body, headers = signed({"id": "evt_4"})
    status, answer = router.post("/webhooks/{{name}}", body, headers)
    assert status == 200 and answer["skipped"] == 1, answer
'''

README = """\
# router-{{name}}

A {{kind}} plugin for message-router, written by `router new-plugin
{{name}} --kind {{kind}}`: {{what}}

## Use it

Install it into the router's environment, then check it is found:

```sh
pip install -e '.[test]'
router plugins        # lists `{{listed}}`
```

In routes.yaml:

```yaml
{{example}}
```

## Test it

```sh
pytest
```

`tests/test_{{name}}.py` starts `router serve` (its embedded
Redis-compatible server, in a temporary directory), posts messages over
HTTP and checks what an HTTP server of the test receives: what the plugin
does, end to end, through the router. It needs the plugin installed (the
router finds it through its entry point, `{{name}}` in the group `router`).

The plugin imports only `router.plugin`, the router's public plugin API;
the router's plugin guide (docs/plugins.md) says what each hook and type
is for.
"""

_DELIVERY_EXAMPLE = """\
destinations:
  out:
    plugin: {{name}}
    url: https://example.com/messages
    ordering_key: user"""

_INGEST_EXAMPLE = """\
routes:
  - path: /webhooks/{{name}}
    format: {{name}}
    format_options:
      secret: ${{{NAME}}_SECRET}
    destinations: [out]"""


def _fill(text: str, name: str, kind: str) -> str:
    camel = "".join(part.capitalize() for part in name.split("_"))
    delivery = kind == "delivery"
    values = {
        "{{kind}}": kind,
        "{{used}}": "plugin" if delivery else "format",
        "{{listed}}": name if delivery else f"format {name}",
        "{{what}}": "POSTs each message to a URL."
        if delivery
        else "takes a signed JSON webhook, one message per request.",
        "{{NAME}}": name.upper(),
        "{{Name}}": camel,
        "{{name}}": name,
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def files(name: str, kind: str) -> dict[str, str]:
    """The package `router-<name>`: relative path -> text."""
    delivery = kind == "delivery"
    readme = README.replace("{{example}}", _DELIVERY_EXAMPLE if delivery else _INGEST_EXAMPLE)
    test = TEST_COMMON + (TEST_DELIVERY if delivery else TEST_INGEST)
    test = test.replace("{{test_imports}}", "" if delivery else "import hashlib\nimport hmac\n")
    raw = {
        "pyproject.toml": PYPROJECT,
        "README.md": readme,
        f"router_{name}/__init__.py": DELIVERY if delivery else INGEST,
        f"router_{name}/py.typed": "",
        f"tests/test_{name}.py": test,
    }
    return {path: _fill(text, name, kind) for path, text in raw.items()}

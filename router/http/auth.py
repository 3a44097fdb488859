"""Who may post to a route: a shared secret, or a signature over the raw body.

Configured per route in routes.yaml (`auth:`); secrets come from the
environment through ${VAR} and never appear in logs or error bodies. Every
comparison of a secret (here, the admin and metrics tokens, the dashboard's
session) is same_secret's, constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from litestar.connection import ASGIConnection

from router.config import AuthSettings
from router.http.errors import ApiError
from router.http.throttle import FailedAuthThrottle, client_key
from router.plugin import standard_webhooks
from router.plugin.refusal import Unauthorized as Unauthorized

# Standard Webhooks: a signed timestamp older or newer than this is refused,
# so a captured request cannot be replayed later.
STANDARD_WEBHOOKS_TOLERANCE = 300


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self.type = settings.type
        default_header = {"header": "X-Router-Token", "hmac-sha256": "X-Hub-Signature-256"}
        self.header = (settings.header or default_header.get(settings.type, "")).lower()
        self.header_label = settings.header or default_header.get(settings.type, "")
        if settings.type == "standard-webhooks":
            self.key = standard_webhooks.secret_key(settings.secret)
        else:
            self.key = settings.secret.encode()

    def check(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise Unauthorized unless the request is signed by the secret."""
        if self.type == "header":
            given = headers.get(self.header)
            if given is None:
                raise Unauthorized(f"missing header {self.header_label}")
            if not same_secret(given, self.key):
                raise Unauthorized(f"wrong secret in header {self.header_label}")
        elif self.type == "hmac-sha256":
            given = headers.get(self.header)
            if given is None:
                raise Unauthorized(f"missing signature header {self.header_label}")
            expected = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
            if not same_secret(given.strip().lower(), expected):
                raise Unauthorized(f"signature in {self.header_label} does not match the body")
        else:
            self._standard_webhooks(headers, body)

    def _standard_webhooks(self, headers: Mapping[str, str], body: bytes) -> None:
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not timestamp or not signatures:
            raise Unauthorized("missing webhook-id, webhook-timestamp or webhook-signature header")
        try:
            ts = int(timestamp)
        except ValueError:
            raise Unauthorized("webhook-timestamp is not a number") from None
        if abs(ts - int(time.time())) > STANDARD_WEBHOOKS_TOLERANCE:
            raise Unauthorized("webhook-timestamp is too old or in the future")
        expected = standard_webhooks.signature(self.key, msg_id, timestamp, body)
        for candidate in signatures.split():
            version, _, value = candidate.partition(",")
            if version != "v1":
                continue
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if same_secret(given, expected):
                return
        raise Unauthorized("webhook-signature does not match the body")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for
    another scheme or none. The scheme is case-insensitive (RFC 7235 2.1):
    `bearer x` is `Bearer x` on the admin API, the dashboard and /metrics."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def client_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Whom a wrong token is counted against (router.http.throttle)."""
    return client_key(connection.client.host if connection.client else None)


def same_secret(given: str | bytes, expected: str | bytes) -> bool:
    """The one comparison of what a request presents (a token, a signature,
    the dashboard's session MAC) with what it must be: constant time in the
    content of `given` (its length may show); text compares as UTF-8."""
    given_bytes = given.encode() if isinstance(given, str) else given
    expected_bytes = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given_bytes, expected_bytes)


class BearerToken:
    """The check of the admin token (admin API, dashboard) or the metrics
    token: compared by same_secret, each wrong one counted against its
    client by `throttle` (router.http.throttle), which refuses a client that
    sent too many with 429 before its token is even looked at."""

    def __init__(self, token: str, variable: str, throttle: FailedAuthThrottle) -> None:
        self._token = token
        self._variable = variable  # named in the refusal: where the token is set
        self._throttle = throttle

    def accepts(self, given: str | None, client: str, where: str) -> bool:
        """Whether `given` (a token, None when none was sent) is the token.
        Raises TooManyWrongTokens while `client` must wait; a request that
        sent no token is no guess and is not counted."""
        if given is None:
            return False
        self._throttle.refuse_if_waiting(client, where)
        if same_secret(given, self._token):
            self._throttle.succeeded(client)
            return True
        self._throttle.failed(client, where)
        return False

    def check(self, authorization: str | None, client: str, what: str) -> None:
        """Raise 401 (or 429, see accepts) unless `authorization` carries the token."""
        if not self.accepts(bearer_token(authorization), client, what):
            raise ApiError(
                401,
                f"{what} need Authorization: Bearer <{self._variable}>",
                {"WWW-Authenticate": "Bearer"},
            )

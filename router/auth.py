"""Who may post to a route: a shared secret, or a signature over the raw body.

Configured per route in routes.yaml (`auth:`); secrets come from the
environment through ${VAR} and never appear in logs or error bodies. Every
comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from router import standard_webhooks
from router.config import AuthSettings
from router.errors import ApiError

# Standard Webhooks: a signed timestamp older or newer than this is refused,
# so a captured request cannot be replayed later.
STANDARD_WEBHOOKS_TOLERANCE = 300


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


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
            if not hmac.compare_digest(given.encode(), self.key):
                raise Unauthorized(f"wrong secret in header {self.header_label}")
        elif self.type == "hmac-sha256":
            given = headers.get(self.header)
            if given is None:
                raise Unauthorized(f"missing signature header {self.header_label}")
            expected = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
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
            if hmac.compare_digest(given, expected):
                return
        raise Unauthorized("webhook-signature does not match the body")


class BearerToken:
    """The `Authorization: Bearer <token>` check of the admin API, the
    dashboard and /metrics (constant-time)."""

    def __init__(self, token: str, variable: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._token = token.encode()
        self._variable = variable  # named in the refusal: where the token is set

    def matches(self, authorization: str | None) -> bool:
        return hmac.compare_digest((authorization or "").encode(), self._expected)

    def matches_token(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)

    def check(self, authorization: str | None, what: str) -> None:
        if not self.matches(authorization):
            raise ApiError(
                401,
                f"{what} need Authorization: Bearer <{self._variable}>",
                {"WWW-Authenticate": "Bearer"},
            )

"""Standard Webhooks (https://www.standardwebhooks.com/): the secret, what
is signed and the signature, in one place for both directions: the router
verifies them on ingest (router.http.auth) and signs outgoing requests with them
(the `http` plugin's `signing:`, router.plugin.http_sink).

A secret is ``whsec_`` followed by base64; the key is the decoded bytes. The
signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` (the body's
exact bytes), and ``webhook-signature`` is ``v1,<base64 HMAC-SHA256>``, several
separated by spaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"

# The spec asks for keys of 24 to 64 random bytes.
MIN_KEY_BYTES = 24


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional).

    Raises ValueError, whose text never contains the secret."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is whsec_<base64>") from None
    if not key:
        raise ValueError("the secret is empty; set it from ${VAR}")
    return key


def signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of the signed content."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64>``."""
    return "v1," + base64.b64encode(signature(key, msg_id, timestamp, body)).decode()

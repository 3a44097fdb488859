"""Who may see the dashboard, and its login sessions: the holder of ROUTER_ADMIN_TOKEN.

A browser logs in once with the token and gets a session cookie; scripts
may send `Authorization: Bearer <token>` instead, as to the admin API. A
token typed in the login form or sent by a script is checked as the admin
API checks it (router.http.auth.BearerToken): wrong ones are counted per client
and throttled (router.http.throttle).

The cookie does not hold the token: it holds an expiry time and an
HMAC-SHA256 of it keyed by the token. So a copied cookie is not the admin
token (it does not open /admin), it stops working after SESSION_SECONDS,
every process of the router accepts it without shared state, and changing
ROUTER_ADMIN_TOKEN ends every session. Logging out deletes the cookie in
the browser; a copy of it stays valid until it expires (change the token
to end them all).

Cookie flags: HttpOnly (no script reads it), SameSite=Strict (no other
site's page can make the browser send it, the first guard against CSRF),
Path=/ui, and Secure when the request came over https (as seen by the
router or said by X-Forwarded-Proto: behind a TLS proxy the router itself
speaks http).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

from litestar import Request

from router.http.auth import bearer_token, same_secret

COOKIE = "router_ui_session"
SESSION_SECONDS = 12 * 3600


def _mac(token: str, expires: int) -> str:
    message = f"router-ui-session:{expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    expires = int(now if now is not None else time.time()) + SESSION_SECONDS
    return f"{expires}.{_mac(token, expires)}"


def session_valid(token: str, value: str, now: float | None = None) -> bool:
    expires_text, _, mac = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires <= (now if now is not None else time.time()):
        return False
    return same_secret(mac, _mac(token, expires))


def bearer(request: Request[Any, Any, Any]) -> str | None:
    """The token of an `Authorization: Bearer` header, if any (the admin
    API's parsing: router.http.auth)."""
    return bearer_token(request.headers.get("authorization"))


def has_session(request: Request[Any, Any, Any], token: str) -> bool:
    session = request.cookies.get(COOKIE)
    return session is not None and session_valid(token, session)


def is_https(request: Request[Any, Any, Any]) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def same_origin(request: Request[Any, Any, Any]) -> bool:
    """Whether a state-changing request may come from where it says.

    Browsers send Origin on every POST; when it is there it must name this
    host (as the browser addressed it: the Host header, kept by proxies
    that forward it), whatever the scheme, since a TLS proxy changes that.
    No Origin (curl, scripts with the bearer token) passes: the cookie
    alone is never sent cross-site (SameSite=Strict)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":  # sandboxed frames, opaque origins
        return False
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard page, never another site."""
    if (
        target
        and target.startswith("/ui")
        and not target.startswith("//")
        and "\\" not in target
        and all(c.isprintable() for c in target)
    ):
        return target
    return "/ui"

"""Keeping configured secrets out of every text the router shows.

A destination that fails often echoes what it got: its error answer may hold
the request's headers, raw or written as a JSON string, percent-encoded or in
base64 (an `Authorization: Basic ...` it decoded back, a debug dump). That
answer becomes the failure reason the router logs, keeps per conversation
(`router status`), stores in dead letters and shows in the admin API and the
dashboard. One `Redactor` per destination, built once from its secret
values, replaces every written form of each of them before the reason is
stored or shown; the read paths apply the running config's redactor again
(a reason stored by an older version), and the log formatters apply the one
of every secret the process has loaded (a plugin's traceback).

What counts as a secret (router.config collects them): every value a
`${VAR}` put into a destination's plugin options (except one that is only
a URL's scheme, host or port), a route's `auth` and `format_options`; and
what a plugin's options name as secrets (`secret_values()`: the http and
chatbot plugins give every header value, the part after an auth scheme, the
signing secret, a URL's password and `user:password`).

Values shorter than MIN_SECRET_LENGTH characters are not looked for: "8080",
"true" or "en" would be starred out of every text, and a value that short
keeps nothing secret anyway.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit

MIN_SECRET_LENGTH = 6

MASK = "***"

_PERCENT = re.compile(r"%[0-9A-F]{2}")


def written_forms(secret: str) -> set[str]:
    """Every form of `secret` a text may hold: raw; inside a JSON string
    (json.dumps with and without ensure_ascii, `/` as `\\/` as PHP writes
    it, and a JSON string inside a JSON string); in a Python repr; HTML-
    escaped; percent-encoded (quote, quote_plus; upper and lower case hex);
    base64 (standard and URL-safe, with and without padding, and the part
    that stays the same wherever the secret starts inside a longer base64
    text)."""
    forms = {secret}
    for ascii_only in (True, False):
        forms.add(json.dumps(secret, ensure_ascii=ascii_only)[1:-1])
    forms |= {form.replace("/", "\\/") for form in forms}
    forms |= {json.dumps(form, ensure_ascii=a)[1:-1] for form in list(forms) for a in (True, False)}
    forms |= _python_forms(secret)
    forms |= {html.escape(secret), html.escape(secret, quote=False)}
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, "/")}
    forms |= encoded
    forms |= {_PERCENT.sub(lambda m: m.group(0).lower(), form) for form in encoded}
    forms |= _base64_forms(secret.encode())
    return {form for form in forms if form}


def _python_forms(secret: str) -> set[str]:
    """`secret` as repr() writes it inside a longer string, in either quote
    style (repr picks one for the whole string)."""
    single = repr("'" + secret + '"')[3:-2]  # both quotes: repr escapes '
    return {repr(secret)[1:-1], single, single.replace("\\'", "'")}


def _base64_forms(data: bytes) -> set[str]:
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        forms |= {whole, whole.rstrip("=")}
        for offset in (1, 2):
            # Inside a longer base64 text the secret starts at some byte
            # offset; the characters made only of its bits are the same
            # whatever precedes and follows it.
            shifted = encode(b"\0" * offset + data).decode().rstrip("=")
            start = -(-offset * 8 // 6)
            end = (offset + len(data)) * 8 // 6
            forms.add(shifted[start:end])
        forms.add(whole.rstrip("=")[: len(data) * 8 // 6])
    return forms


class Redactor:
    """Replaces every written form of each secret: with its label (a
    `{secret: label}` mapping: router.config names the `${VAR}` in config
    errors), or with `***`. Longest first, so a part (a token) never leaves
    the rest of its whole (`Bearer <token>`) in the text."""

    def __init__(self, secrets: Mapping[str, str] | Iterable[str] = ()) -> None:
        labels = secrets if isinstance(secrets, Mapping) else dict.fromkeys(secrets, MASK)
        self.secrets: dict[str, str] = {
            s: label for s, label in labels.items() if len(s) >= MIN_SECRET_LENGTH
        }
        replacements: dict[str, str] = {}
        for secret in sorted(self.secrets, key=len, reverse=True):
            for form in written_forms(secret):
                replacements.setdefault(form, self.secrets[secret])
        self._replacements = replacements
        self._longest = max(map(len, replacements), default=0)
        self._pattern = _trie_pattern(replacements) if replacements else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: self._replacements[m.group(0)], text)

    def cut(self, text: str, limit: int) -> str:
        """`self(text)[:limit]`, reading only as far as it needs: a 64 KiB
        error page whose first 200 characters are kept costs what those
        cost (a match that starts before the cut ends at most one form's
        length after it)."""
        if self._pattern is None:
            return text[:limit]
        pieces: list[str] = []
        size = pos = 0
        while size < limit:
            end = min(len(text), pos + (limit - size) + self._longest)
            match = self._pattern.search(text, pos, end)
            if match is None:
                pieces.append(text[pos : pos + limit - size])
                break
            label = self._replacements[match.group(0)]
            pieces += [text[pos : match.start()], label]
            size += match.start() - pos + len(label)
            pos = match.end()
        return "".join(pieces)[:limit]

    def merged(self, other: Redactor) -> Redactor:
        """Both redactors' secrets in one (this one's labels first)."""
        return Redactor({**other.secrets, **self.secrets})


def _trie_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of `words`, the longest where several start
    at the same place, written as a trie: the engine tries only the branches
    of the character it reads, so hundreds of forms cost little per text (a
    plain alternation tries every one at every position)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # the end of a word
    return re.compile(_trie_regex(trie))


def _trie_regex(node: dict[str, Any]) -> str:
    # A chain of single children is written as plain text: recursion (and
    # group nesting) grows with the branch points, not with the length.
    text = ""
    while "" not in node and len(node) == 1:
        char, child = next(iter(node.items()))
        text += re.escape(char)
        node = child
    branches = [re.escape(c) + _trie_regex(child) for c, child in node.items() if c]
    if not branches:
        return text
    body = "(?:" + "|".join(branches) + ")"
    # Where a word ends too, the longer ones are tried first, then none.
    return text + body + ("?" if "" in node else "")


def url_secrets(url: str) -> list[str]:
    """What of a URL is secret: its password (userinfo_secrets) and its
    query values (as written and decoded)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return [url]
    found = userinfo_secrets(url) + [pair.partition("=")[2] for pair in query.split("&")]
    found += [value for _, value in parse_qsl(query, keep_blank_values=True)]
    return [s for s in found if s]


def userinfo_secrets(url: str) -> list[str]:
    """A URL's password (as written and decoded) and the `user:password` a
    client sends base64-encoded as Basic auth; none without a password."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return []
    userinfo, at, _ = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return []
    return [password, unquote(password), f"{unquote(user)}:{unquote(password)}"]


def url_open_parts(url: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a URL's scheme (with `://`) and its host and port are, as
    (start, end) positions: the parts that are never secret."""
    scheme_end = url.index("://") + 3
    authority_end = len(url)
    for i in range(scheme_end, len(url)):
        if url[i] in "/?#":
            authority_end = i
            break
    host_start = url.rfind("@", scheme_end, authority_end) + 1 or scheme_end
    return (0, scheme_end), (host_start, authority_end)


def shown_url(url: str) -> str:
    """A URL as the router prints it (as written, `${VAR}`s unexpanded):
    with its password, if any, as `***`."""
    return re.sub(r"^([^:/?#]+://[^/?#@:]*:)[^/?#@]*@", rf"\1{MASK}@", url)


def shown_redis_url(url: str) -> str:
    """A Redis URL without its password, in the user part or in the query
    (`unix:///run/redis.sock?password=...`, as redis-py takes it). Text that
    is no URL (no `scheme://`) is shown as written, a `user:password@`
    in it starred."""
    if "://" not in url:
        return re.sub(r"^([^:/?#@]*:)[^/?#@]*@", rf"\1{MASK}@", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
    query = urlencode(
        [(k, MASK if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)],
        safe="*",
    )
    # Written out: urlunsplit would drop the // of an empty host (unix:///...).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


NOTHING = Redactor()

# Every secret this process has loaded (router.config adds them): what the
# log formatters (router.ops.logs) star out of every line, tracebacks included.
_loaded = NOTHING


def remember(redactor: Redactor) -> None:
    """Add a config's secrets to the ones every log line is cleaned of. Never
    forgets one: a line about a message stored under an earlier config may
    still quote it."""
    global _loaded
    if redactor.secrets.keys() - _loaded.secrets.keys():
        _loaded = _loaded.merged(Redactor(dict.fromkeys(redactor.secrets, MASK)))


def known(text: str) -> str:
    """`text` without any secret this process has loaded (log lines; what
    the CLI prints from Redis)."""
    return _loaded(text)

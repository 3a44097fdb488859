"""router.ops.redaction: which values of routes.yaml are secrets, and every
written form of them starred out, with the parts around them kept."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

from router.config.loading import load
from router.ops import redaction
from router.ops.logs import FORMAT, JsonFormatter, OneLineFormatter
from router.ops.redaction import Redactor
from tests.support.routes import write_yaml

SECRET = 'Q"UOTED\\s3cret/é+x'


def test_every_written_form_is_starred_out_and_the_rest_kept() -> None:
    redact = Redactor([SECRET, f"Bearer {SECRET}"])
    bearer = f"Bearer {SECRET}".encode()
    for leaked in (
        SECRET,
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(SECRET)[1:-1])[1:-1],  # an error text quoted in a JSON body
        json.dumps(SECRET).replace("/", "\\/")[1:-1],  # PHP's json_encode
        repr(SECRET)[1:-1],
        quote(SECRET, safe=""),
        quote(SECRET, safe="").lower().replace("q%22uoted%5cs3cret", "Q%22UOTED%5cs3cret"),
        quote_plus(SECRET),
        base64.b64encode(bearer).decode(),
        base64.urlsafe_b64encode(bearer).decode().rstrip("="),
    ):
        assert redact(f"before {leaked} after") == "before *** after", leaked
    # Inside a longer base64 text, wherever the secret starts: all but the
    # characters it shares with its neighbours goes.
    for prefix in (b"", b"x", b"xy"):
        whole = base64.b64encode(prefix + b'{"a": "' + SECRET.encode() + b'"}').decode()
        assert base64.b64encode(SECRET.encode())[2:-4].decode() not in redact(whole)
        assert "***" in redact(whole)


def test_a_short_value_is_not_a_secret() -> None:
    # "8080" or "true" would be starred out of every text, and keeps nothing secret.
    redact = Redactor(["true", "abcde", "abcdef"])
    assert redact("retry: true, abcde, abcdef") == "retry: true, abcde, ***"
    assert not Redactor(["x" * (redaction.MIN_SECRET_LENGTH - 1)])


def _secrets(tmp_path: Path, options: str, env: dict[str, str]) -> set[str]:
    routes = write_yaml(
        tmp_path,
        "routes:\n  - path: /in\n    destinations: [bot]\n"
        "destinations:\n  bot:\n    plugin: chatbot\n    timeout: ${TIMEOUT}\n" + options,
    )
    return set(
        load(str(routes), env={"TIMEOUT": "10s", **env}).destinations["bot"].redactor.secrets
    )


def test_which_values_are_secrets(tmp_path: Path) -> None:
    # A variable in a URL's host is not one; in its path or query it is.
    found = _secrets(
        tmp_path,
        "    url: http://${HOST}:8080/bot${TOKEN}/send?key=${KEY}\n",
        {"HOST": "bot.internal", "TOKEN": "123456:abcdef", "KEY": "k3y-value"},
    )
    assert found == {"123456:abcdef", "k3y-value"}
    # A whole URL from one variable: its password and query values; header
    # values (and their part after the scheme) whether from a variable or not.
    found = _secrets(
        tmp_path,
        "    url: ${URL}\n    headers: {Authorization: Bearer literal-token, X-Env: '${ENV}'}\n",
        {"URL": "https://robot:pa%40ss-w0rd@bot.example/hook?sig=s1gnature&v=2", "ENV": "prod-eu"},
    )
    assert found == {
        "pa%40ss-w0rd",
        "pa@ss-w0rd",
        "robot:pa@ss-w0rd",
        "s1gnature",
        "Bearer literal-token",
        "literal-token",
        "prod-eu",
    }


def test_log_lines_and_tracebacks_lose_every_loaded_secret(tmp_path: Path) -> None:
    secret = "tok-for-the-log-net-1f9c"
    _secrets(
        tmp_path, "    url: http://bot/hook\n    headers: {X-Key: '${KEY}'}\n", {"KEY": secret}
    )
    for formatter in (OneLineFormatter(FORMAT), JsonFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        log = logging.getLogger("test.redaction")
        log.propagate = False
        log.addHandler(handler)
        try:
            try:
                raise ValueError(f"the plugin choked on {json.dumps({'k': secret})}")
            except ValueError:
                log.exception("plugin raised with %s", secret)
        finally:
            log.removeHandler(handler)
        text = stream.getvalue()
        assert secret not in text and "***" in text and "plugin raised" in text, text


def test_a_cut_text_is_the_cut_of_the_redacted_text() -> None:
    # The HTTP sink keeps 200 characters of an answer of up to 64 KiB: a
    # secret straddling the cut goes whole, and the rest is not read.
    redact = Redactor([SECRET, f"Bearer {SECRET}"])
    forms = sorted(redaction.written_forms(SECRET))
    for i in range(len(forms) * 4):
        text = "".join(("x" * (i % 7), forms[i % len(forms)], "é" * (i % 3))) * (i % 5 + 1)
        for limit in (0, 3, 10, 40, 200):
            assert redact.cut(text, limit) == redact(text)[:limit], (text, limit)

"""A `format:` route checked at load like a destination's plugin options
(the whatsapp format, plugins/whatsapp). The hook's documentation:
tests/unit/test_plugin_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import ConfigError
from router.config.loading import load
from tests.support.routes import write_yaml

ROUTE = """
routes:
  - path: /webhooks/whatsapp
    format: {format}
    format_options: {options}
    destinations: [chatbot]
    {extra}
destinations:
  chatbot: {{plugin: chatbot, url: "http://127.0.0.1:9/bot", ordering_key: wa_id}}
  receipts: {{plugin: http, url: "http://127.0.0.1:9/r"}}
"""
GOOD = '{verify_token: t, app_secret: "${APP_SECRET}"}'


def _load(tmp_path: Path, fmt: str = "whatsapp", options: str = GOOD, extra: str = "") -> object:
    path = write_yaml(tmp_path, ROUTE.format(format=fmt, options=options, extra=extra))
    return load(str(path), env={"APP_SECRET": "s3cret"})


def test_a_whatsapp_route_loads(tmp_path: Path) -> None:
    config = _load(
        tmp_path, options='{verify_token: t, app_secret: "${APP_SECRET}", statuses: receipts}'
    )
    (route,) = config.routes  # type: ignore[attr-defined]
    assert route.format.name == "whatsapp"
    assert route.format_options.app_secret == "s3cret"
    assert [d.name for d in route.format_destinations] == ["receipts"]


@pytest.mark.parametrize(
    ("fmt", "options", "extra", "words"),
    [
        ("signal", GOOD, "", ["format 'signal' is not installed", "whatsapp"]),
        ("whatsapp", "{verify_token: t}", "", ["format_options", "app_secret"]),
        ("whatsapp", '{verify_token: "", app_secret: s}', "", ["format_options.verify_token"]),
        ("whatsapp", "{verify_token: t, app_secret: s, extra: 1}", "", ["unknown field `extra`"]),
        ("whatsapp", "{verify_token: t, app_secret: s, statuses: nowhere}", "", ["'nowhere'"]),
        ("whatsapp", GOOD, "fields: {mensaje: string}", ["fields", "remove it"]),
        ("whatsapp", GOOD, "id_field: id", ["id_field", "remove it"]),
        ("whatsapp", GOOD, "auth: {type: header, secret: x}", ["auth", "remove it"]),
        ("whatsapp", GOOD, "rate_limit: {requests: 5, per: wa_id}", ["per client only"]),
    ],
)
def test_a_bad_format_route_is_one_line_naming_it(
    tmp_path: Path, fmt: str, options: str, extra: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, fmt, options, extra)
    text = str(err.value)
    assert "\n" not in text and "routes[0]" in text
    for word in words:
        assert word in text, (word, text)


def test_format_options_without_a_format_are_refused(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
        routes:
          - {path: /a, destinations: [chatbot], format_options: {verify_token: t}}
        destinations:
          chatbot: {plugin: chatbot, url: "http://127.0.0.1:9/bot"}
        """,
    )
    with pytest.raises(ConfigError, match="only a route with `format:` has them"):
        load(str(path), env={})

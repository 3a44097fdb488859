"""The `http` plugin's outbound options in routes.yaml (docs/outbound-webhooks.md):
each bad value is one config error line naming the option's place and the
fix, and never showing a header value or the signing secret; the body
template language; every option documented. (Delivered for real:
tests/integration/test_http_outbound.py.)"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from router.config.loading import load
from router.plugin.http_sink import HttpOptions
from router.plugin.reshape import compile_template, render
from router.plugin.sinks import DeliveryFailed, OptionError
from tests.support import ROOT
from tests.support.routes import write_yaml
from tests.unit.test_config import GOOD, config_error

HTTP = GOOD.replace("plugin: chatbot", "plugin: http")
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
TOKEN = "tok-9b8a7c6d-never-shown"
ENV = {"TOKEN": TOKEN, "WHSEC": SECRET}


def options(directory: Path, extra: str) -> HttpOptions:
    config = load(str(write_yaml(directory, HTTP + extra)), env=ENV)
    opts: HttpOptions = config.destinations["chatbot"].options
    return opts


def test_defaults_are_todays_behaviour(tmp_path: Path) -> None:
    opts = options(tmp_path, "")
    assert (opts.method, opts.success_statuses, opts.signing, opts.body) == (
        "POST",
        None,
        None,
        None,
    )


def test_method_any_case_and_statuses_and_signing_load(tmp_path: Path) -> None:
    opts = options(
        tmp_path,
        "    method: patch\n"
        "    success_statuses: [200, '201-204', 2xx, 409]\n"
        "    signing: {type: standard-webhooks, secret: '${WHSEC}'}\n"
        "    headers: {Authorization: 'Bearer ${TOKEN}'}\n",
    )
    assert opts.method == "PATCH"
    assert opts.signing is not None and opts.signing.secret == SECRET
    assert opts.headers == {"Authorization": f"Bearer {TOKEN}"}
    # repr (a log line, a traceback) shows neither the header value nor the secret
    assert TOKEN not in repr(opts) and SECRET not in repr(opts) and "***" in repr(opts)


# (name, option lines, what the one line must contain); the option lines
# start at line 14 of the file.
BAD: list[tuple[str, str, list[str]]] = [
    (
        "GET sends no body",
        "    method: GET\n",
        [
            ":14: ",
            "destinations.chatbot.method: GET sends no body",
            "use POST (the default), PUT or PATCH",
        ],
    ),
    ("DELETE", "    method: delete\n", ["chatbot.method: DELETE sends no body"]),
    ("unknown method", "    method: FETCH\n", ["chatbot.method: 'FETCH' is not a method"]),
    (
        "status out of range",
        "    success_statuses: [200, 700]\n",
        [":14: ", "chatbot.success_statuses[1]: 700: statuses are 100 to 599"],
    ),
    (
        "status words",
        "    success_statuses: [ok]\n",
        ["chatbot.success_statuses[0]: 'ok' is not a status", '"200-299" or "2xx"'],
    ),
    ("reversed range", "    success_statuses: ['299-200']\n", ["success_statuses[0]"]),
    (
        "empty statuses",
        "    success_statuses: []\n",
        ["chatbot.success_statuses: list at least one"],
    ),
    (
        "header with a line break",
        '    headers:\n      X-Ok: fine\n      Authorization: "Bearer ${TOKEN}\\n"\n',
        [":16: ", "chatbot.headers.Authorization: the value holds a line break", "remove it"],
    ),
    (
        "header with a trailing space",
        '    headers:\n      Authorization: "Bearer ${TOKEN} "\n',
        ["chatbot.headers.Authorization: the value starts or ends with a space or tab"],
    ),
    (
        "header outside ASCII",
        "    headers: {X-Team: 'équipe ${TOKEN}'}\n",
        ["chatbot.headers.X-Team: the value holds a character outside ASCII"],
    ),
    (
        "bad header name",
        "    headers: {'X Bad': v}\n",
        ["chatbot.headers.X Bad: not a header name"],
    ),
    (
        "framing header",
        "    headers: {Content-Length: '5'}\n",
        ["headers.Content-Length: the HTTP client sets it"],
    ),
    ("header twice", "    headers: {X-A: '1', x-a: '2'}\n", ["headers.x-a: given twice"]),
    (
        "router's own header",
        "    headers: {idempotency-key: abc}\n",
        ["headers.idempotency-key: the router sets it"],
    ),
    (
        "router's sequence header",
        "    headers: {X-Router-Sequence: '7'}\n",
        ["headers.X-Router-Sequence: the router sets it"],
    ),
    (
        "id_header naming the router's sequence header",
        "    id_header: X-Router-Sequence\n",
        ["id_header: the router sets X-Router-Sequence on every delivery"],
    ),
    (
        "signing header set by hand",
        "    signing: {type: standard-webhooks, secret: '${WHSEC}'}\n"
        "    headers: {Webhook-Signature: '${TOKEN}'}\n",
        ["headers.Webhook-Signature: signing: sets it"],
    ),
    (
        "secret not whsec base64",
        "    signing:\n      type: standard-webhooks\n      secret: 'whsec_${TOKEN}!'\n",
        [":16: ", "chatbot.signing.secret: a Standard Webhooks secret is whsec_<base64>"],
    ),
    (
        "empty secret",
        "    signing: {type: standard-webhooks, secret: whsec_}\n",
        ["chatbot.signing.secret: the secret is empty"],
    ),
    (
        "unknown signing type",
        "    signing: {type: hmac, secret: '${WHSEC}'}\n",
        ["chatbot.signing.type", "allowed: standard-webhooks"],
    ),
    (
        "bad path",
        "    body:\n      to: wa_id\n      text: mensaje..x\n",
        [":16: ", "chatbot.body.text: cannot read the path 'mensaje..x' at character 8"],
    ),
    ("bad index", "    body: {first: 'items[x]'}\n", ["chatbot.body.first: cannot read the path"]),
    (
        "optional body",
        "    body: 'payload?'\n",
        ["chatbot.body: the whole body cannot be optional"],
    ),
    ("nested bad path", "    body: {a: {b: [ok, ' ']}}\n", ["chatbot.body.a.b[1]: cannot read"]),
]


@pytest.mark.parametrize(
    ("extra", "words"), [(e, w) for _, e, w in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_option_is_one_line_at_its_place_without_secrets(
    tmp_path: Path, extra: str, words: list[str]
) -> None:
    message = config_error(write_yaml(tmp_path, HTTP + extra), env=ENV)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    for secret in (TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in message


def test_a_short_signing_key_loads_with_a_warning(tmp_path: Path) -> None:
    short = "whsec_" + base64.b64encode(b"0123456789").decode()
    path = write_yaml(
        tmp_path, HTTP + f"    signing: {{type: standard-webhooks, secret: {short}}}\n"
    )
    (warning,) = load(str(path), env={}).warnings
    assert ":14: destinations.chatbot.signing: the secret's key is 10 bytes" in warning
    assert short not in warning


MESSAGE = {
    "wa_id": "44",
    "mensaje": "Hola",
    "profile": {"name": "Ana", "odd.key": 1},
    "items": [{"id": "a"}, {"id": "b"}],
    "const": "c",
    "teléfono": "+34",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({"to": "wa_id", "text": "$.mensaje"}, {"to": "44", "text": "Hola"}),
        ({"n": 'profile["odd.key"]', "t": "teléfono"}, {"n": 1, "t": "+34"}),
        ({"first": "items[0].id", "last": "items[-1].id"}, {"first": "a", "last": "b"}),
        ({"c": "const:wa_id", "k": '["const"]', "x": "const:"}, {"c": "wa_id", "k": "c", "x": ""}),
        (
            {"v": 2, "on": True, "none": None, "f": 1.5},
            {"v": 2, "on": True, "none": None, "f": 1.5},
        ),
        ({"meta.source": "const:wa"}, {"meta.source": "wa"}),  # keys are literal
        (
            {"data": "$", "ids": ["items[0].id", "items[5].id?", "wa_id"]},
            {"data": MESSAGE, "ids": ["a", "44"]},
        ),
        ({"a": "missing?", "b": {"c": "profile.missing?"}}, {"b": {}}),
        ("profile", {"name": "Ana", "odd.key": 1}),
    ],
)
def test_templates_render(template: object, expected: object) -> None:
    body = json.dumps(MESSAGE).encode()
    assert json.loads(render(compile_template(template), body)) == expected


def test_a_missing_required_path_fails_naming_output_and_input() -> None:
    body = json.dumps(MESSAGE).encode()
    for path in ("nope", "items[2].id", "wa_id.x", "profile[0]", "items.id"):
        with pytest.raises(
            DeliveryFailed, match=rf"^body\.out: the message has no {re.escape(path)} "
        ) as info:
            render(compile_template({"out": path}), body)
        assert info.value.permanent  # no retry can add the field: given up at once


def test_option_error_names_its_place() -> None:
    with pytest.raises(OptionError) as info:
        compile_template({"a": [1, {"b": "x y"}]})
    assert info.value.where == ("body", "a", 1, "b")


def test_every_http_option_is_documented() -> None:
    """As test_every_routes_yaml_setting_is_in_the_readme, for the http
    plugin's options: each is in docs/outbound-webhooks.md and named in the
    README's routes.yaml section."""
    doc = (ROOT / "docs" / "outbound-webhooks.md").read_text()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## routes.yaml") : readme.index("## The ingest API")]
    assert "docs/outbound-webhooks.md" in section
    for name in HttpOptions.__struct_fields__:
        assert re.search(rf"\b{name}:", doc), f"{name} is not in docs/outbound-webhooks.md"
        assert f"`{name}`" in section, f"{name} is not named in the README's routes.yaml section"


def test_the_docs_example_loads(tmp_path: Path) -> None:
    """The routes.yaml example of docs/outbound-webhooks.md, as written."""
    doc = (ROOT / "docs" / "outbound-webhooks.md").read_text()
    example = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)[0]
    path = write_yaml(tmp_path, example)
    config = load(str(path), env={"CRM_TOKEN": TOKEN, "CRM_WEBHOOK_SECRET": SECRET})
    (dest,) = [d for d in config.destinations.values() if d.settings.plugin == "http"]
    assert dest.options.signing is not None and dest.options.body is not None

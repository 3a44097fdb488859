"""The public plugin API (router.plugin) and its guide (docs/plugins.md):
the shipped plugins import nothing else of the router, every name it
exports exists and is documented, every hook is documented with its
signature, and the guide's examples are complete. (Its delivery plugin
run as written, a message delivered through it:
tests/integration/test_plugin_guide.py.)"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import re
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import router.plugin
from router.ingest.route import decode_object
from router.plugin import BadRequest, FormatRequest, Unauthorized, hookspecs
from tests.support import ROOT

GUIDE = ROOT / "docs" / "plugins.md"
PUBLIC = "router.plugin"

# Every plugin package the project ships or tests with: each folder of
# plugins/ (a pip project), and the third-party test plugin.
PLUGIN_DIRS = [
    *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()),
    ROOT / "tests" / "thirdparty_plugin",
]


def _plugin_files() -> Iterator[Path]:
    for folder in PLUGIN_DIRS:
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).parts
            if not any(p == "build" or p.endswith(".egg-info") for p in parts):
                yield path


def private_imports(source: str) -> list[tuple[int, str]]:
    """(line, import) of each import of the router other than router.plugin,
    wherever it is (a function's body, `if TYPE_CHECKING:` too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "router":
                found += [
                    (node.lineno, f"from router import {a.name}")
                    for a in node.names
                    if a.name != "plugin"
                ]
            elif node.module.startswith("router.") and node.module != PUBLIC:
                names = ", ".join(a.name for a in node.names)
                found.append((node.lineno, f"from {node.module} import {names}"))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if (a.name == "router" or a.name.startswith("router.")) and a.name != PUBLIC
            ]
    return found


def test_the_import_check_finds_every_form_of_a_private_import() -> None:
    source = """
import json
import router
import router.plugin
import router.plugin.sinks as sinks
from router import plugin, http
from router.plugin import hookimpl
from router.ingest.route import MAX_KEY_LENGTH
from routerx import y
from . import sibling

def later():
    from router.http.auth import Unauthorized
"""
    assert sorted(line for line, _ in private_imports(source)) == [3, 5, 6, 8, 13]


def test_the_plugins_import_only_the_public_api() -> None:
    files = list(_plugin_files())
    assert {p.parent.name for p in files} >= {
        "router_chatbot",
        "router_whatsapp",
        "router_twilio",
        "router_telegram",
        "router_amqp",
        "router_nats",
        "router_mqtt",
    }
    assert ROOT / "tests" / "thirdparty_plugin" / "router_recorder.py" in files
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {text} (import it from {PUBLIC})"
        for path in files
        for line, text in private_imports(path.read_text())
    ]
    assert problems == []


def test_every_exported_name_exists_and_nothing_else_is_public() -> None:
    missing = [name for name in router.plugin.__all__ if not hasattr(router.plugin, name)]
    assert missing == []
    assert len(set(router.plugin.__all__)) == len(router.plugin.__all__)
    # Its submodules (router.plugin.sinks, ...) are attributes once loaded, and private.
    public = {
        n
        for n, v in vars(router.plugin).items()
        if not n.startswith("_") and not inspect.ismodule(v)
    } - {"annotations"}
    assert public == set(router.plugin.__all__), "import a name there only to export it"


def _hooks() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(function)
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, "router_spec")  # marked @hookspec
    }


def test_every_hook_has_a_one_line_docstring() -> None:
    hooks = _hooks()
    assert {"router_sink_types", "router_ingest_formats"} <= set(hooks)
    for name in hooks:
        doc = (getattr(hookspecs, name).__doc__ or "").strip()
        assert doc, f"{name} has no docstring"
        assert "\n" not in doc, f"{name}: one line in the docstring, the rest in docs/plugins.md"


def test_every_hook_is_documented_in_the_guide_with_its_signature() -> None:
    """datasette's test_plugin_hooks_are_documented: a heading per hook,
    `name(parameters)` exactly as the hookspec declares them."""
    headings = set(re.findall(r"^#+ `([^`]+)`$", GUIDE.read_text(), re.MULTILINE))
    for name, signature in _hooks().items():
        written = f"{name}({', '.join(signature.parameters)})"
        assert written in headings, f"docs/plugins.md has no heading `{written}`"


def test_every_exported_name_is_in_the_guide() -> None:
    text = GUIDE.read_text()
    undocumented = [n for n in router.plugin.__all__ if f"`{n}`" not in text]
    assert undocumented == []


def guide_blocks(language: str, section: str = "## A delivery plugin") -> list[str]:
    """The `language` code blocks of one section of the plugin guide."""
    text = GUIDE.read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(rf"```{language}\n(.*?)```", body, re.DOTALL)


def test_the_guide_examples_import_only_the_public_api() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        assert private_imports(block) == [], block  # and each one parses


def test_the_plugin_pyproject_is_complete() -> None:
    (toml,) = guide_blocks("toml")
    project = tomllib.loads(toml)
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert "message-router" in project["project"]["dependencies"]
    assert project["project"]["entry-points"]["router"] == {"sms": "my_sms_plugin"}


def _format_example() -> types.ModuleType:
    (code,) = guide_blocks("python", "## Ingest formats")
    module = types.ModuleType("my_form_plugin")
    exec(compile(code, "my_form_plugin/__init__.py", "exec"), module.__dict__)
    return module


def test_the_ingest_format_example_reads_a_request_as_the_guide_says() -> None:
    plugin = _format_example()
    (fmt,) = plugin.router_ingest_formats()
    assert fmt.name == "form" and fmt.description
    options = fmt.options(secret="s3cret")
    body = json.dumps({"answers": [{"respondent": "u1", "q": 1}, {"q": 2}]}).encode()
    signature = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    fmt.authenticate(options, {"x-form-signature": signature}, body)
    with pytest.raises(Unauthorized):
        fmt.authenticate(options, {"x-form-signature": "0" * 64}, body)

    def request(raw: bytes) -> FormatRequest:
        return FormatRequest(raw, {}, options, lambda b: decode_object(b, 1 << 20, 64, None))

    read = request(body)
    (message,) = fmt.parse(read)
    assert (message.ordering_key, message.where) == ("u1", "answers[0]")
    assert json.loads(message.body) == {"respondent": "u1", "q": 1}
    (skipped,) = read.skipped
    assert (skipped.reason, skipped.item) == ("answer.respondent", {"q": 2})
    with pytest.raises(BadRequest):
        fmt.parse(request(b'{"answers": {}}'))

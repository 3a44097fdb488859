"""Claims of README.md and docs/ checked against the code: the commands and
flags the README's table names, the body docs/whatsapp.md says the bot
receives, the variables its "Trying it" needs, log lines the docs quote.
(Settings: tests/unit/test_settings.py; metric names:
tests/integration/test_metrics.py; the plugin guide: test_plugin_api.py.)"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
from pathlib import Path

import pytest
from router_whatsapp import WhatsAppOptions, parse

from router.cli.main import build_parser
from router.ingest.route import decode_object
from router.plugin.formats import FormatRequest
from tests.support import ROOT

README = ROOT / "README.md"
WHATSAPP = ROOT / "docs" / "whatsapp.md"

# What a placeholder of the table stands for in a command line that parses.
PLACEHOLDERS = {
    "DEST": "chatbot",
    "KEY": "442",
    "OTHER": "other",
    "ROUTE": "/webhooks/whatsapp",
    "N": "5",
    "S": "0.5",
}


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def _command_rows() -> list[tuple[list[str], str]]:
    """Each row of the README's command table: its command lines (the
    `router …` in backticks of the first column) and its description."""
    table = _section(README.read_text(), "| command | what it runs |", "\n\n")
    rows = []
    for row in table.splitlines()[2:]:
        _, command, what, _ = row.split("|")
        lines = re.findall(r"`([^`]+)`", command)
        # `router dead blocked DEST` / `dead unblock DEST`: the second
        # command of a row may leave out the `router`.
        rows.append(([line.removeprefix("router ") for line in lines], what))
    return rows


def _argv(line: str) -> list[str]:
    """`status [DEST] [--watch [S]] [--json]` as arguments that must parse."""
    line = line.replace("…", "").replace("[", " ").replace("]", " ")
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(line)]


@pytest.mark.parametrize("row", _command_rows(), ids=lambda row: row[0][0])
def test_every_command_and_flag_of_the_readme_table_exists(row: tuple[list[str], str]) -> None:
    lines, what = row
    parser = build_parser()
    for line in lines:
        argv = _argv(line)
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"`router {line}` of the README does not parse as {argv}")
    # Flags named in the description (`--burst delivers ...`) are its own.
    command = _subcommands()[lines[0].split()[0]]
    for flag in re.findall(r"`(--[a-z-]+)", what):
        assert flag in command._option_string_actions, f"`router {lines[0]}`: no {flag}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    assert isinstance(sub.choices, dict)
    return sub.choices


def test_every_command_is_in_the_readme_table() -> None:
    documented = {lines[0].split()[0] for lines, _ in _command_rows()}
    documented |= {line.split()[0] for lines, _ in _command_rows() for line in lines}
    assert set(_subcommands()) == documented


def _whatsapp_trying_it() -> str:
    text = WHATSAPP.read_text()
    (block,) = re.findall(r"```sh\n(.*?)```", text[text.index("## Trying it") :], re.DOTALL)
    return block


def test_the_whatsapp_trying_it_sets_every_variable_its_routes_yaml_names() -> None:
    """Following "Trying it" starts the router: each `${VAR}` of the
    routes.yaml it says to save is exported first."""
    text = WHATSAPP.read_text()
    routes_yaml = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)[0]
    needed = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", routes_yaml))
    exported = {
        name
        for line in _whatsapp_trying_it().splitlines()
        if line.startswith("export ")
        for name in re.findall(r"([A-Z_][A-Z0-9_]*)=", line)
    }
    assert needed == {"WHATSAPP_VERIFY_TOKEN", "WHATSAPP_APP_SECRET", "BOT_URL", "RECEIPTS_URL"}
    assert needed <= exported, f"not set by Trying it: {sorted(needed - exported)}"


def test_the_body_whatsapp_md_shows_is_the_one_the_bot_receives() -> None:
    """The body shown under "What the bot receives" is, byte for byte, what
    the plugin stores for the webhook of "Trying it" (and the chatbot
    plugin POSTs stored bodies as they are)."""
    webhook = re.search(r"^body='(.*)'$", _whatsapp_trying_it(), re.MULTILINE)
    assert webhook is not None
    options = WhatsAppOptions(verify_token="t", app_secret="s", statuses="receipts")
    request = FormatRequest(
        body=webhook.group(1).encode(),
        headers={},
        options=options,
        decode=lambda body: decode_object(body, 1 << 20, 64, None),
    )
    (message,) = parse(request)
    section = _section(WHATSAPP.read_text(), "## What the bot receives", "\nStatuses ")
    (shown,) = re.findall(r"```json\n(.*?)\n\s*```", section, re.DOTALL)
    assert message.body == shown.strip().encode()
    assert json.loads(shown)["mensaje"] == "Hola!"


def test_every_default_in_the_environment_table_is_the_default() -> None:
    """Setting a variable to the default the README's table gives changes
    nothing: the table's defaults are the code's."""
    import dataclasses

    from router.config.settings import Settings

    table = _section(README.read_text(), "| variable | default | meaning |", "\n\n")
    fields = {f.metadata["env"]: f.name for f in dataclasses.fields(Settings)}
    default = Settings.from_env({})
    checked = 0
    for row in table.splitlines()[2:]:
        names, defaults = (re.findall(r"`([^`]+)`", cell) for cell in row.split("|")[1:3])
        if not defaults or names == ["BOT_URL"]:  # unset; BOT_URL is the routes.yaml's
            continue
        assert len(names) == len(defaults), row
        for name, value in zip(names, defaults, strict=True):
            field = fields[name]
            assert getattr(Settings.from_env({name: value}), field) == getattr(default, field), (
                f"README: {name} defaults to {value!r}; the code: {getattr(default, field)!r}"
            )
            checked += 1
    assert checked >= 20


def test_every_path_of_the_project_layout_exists_and_every_module_is_in_it() -> None:
    table = README.read_text()[README.read_text().index("## Project layout") :]
    table = table[table.index("| path |") :].split("\n\n")[0]
    paths = {
        p for row in table.splitlines()[2:] for p in re.findall(r"`([^`]+)`", row.split("|")[1])
    }
    assert all((ROOT / p).exists() for p in paths), sorted(
        p for p in paths if not (ROOT / p).exists()
    )
    packages = {f"router/{p.parent.name}/" for p in (ROOT / "router").glob("*/__init__.py")}
    assert packages <= paths, sorted(packages - paths)


# Log lines the docs quote, by a literal part of each: the part must be in
# the docs and in the code that logs it (an f-string's fixed text).
QUOTED_LOG_LINES = [
    "delivery workers on",
    "(GET verify too)",
    "not reloaded, the running config is kept",
    "is valid again, as the running config",
    "orphaned destinations (",
    "destinations changed",
    "skipped a malformed item",
    "stored the rest; kept it for ",
    "(all waiting keys)",
    "installed after it started? restart it",
    "set after it started? restart it",
    "cannot read the routes file: not a regular file",
    "router: environment error: ",
    "YAML syntax error",
]


def test_the_log_lines_the_docs_quote_are_logged_by_the_code() -> None:
    docs = " ".join(
        " ".join(p.read_text().split()) for p in [README, *(ROOT / "docs").glob("*.md")]
    )
    code = "".join(
        p.read_text() for p in [*ROOT.glob("router/**/*.py"), *ROOT.glob("plugins/*/*/*.py")]
    )
    for fragment in QUOTED_LOG_LINES:
        assert fragment in docs, f"no doc quotes {fragment!r} any more"
        assert fragment in code, f"the docs quote {fragment!r}; no code logs it"


def _complete_routes_files() -> list[tuple[str, str]]:
    """Every routes.yaml the docs show whole (`routes:` and `destinations:`)."""
    found = []
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for match in re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL):
            block = match.group(1)
            if re.search(r"^routes:", block, re.M) and re.search(r"^destinations:", block, re.M):
                found.append((f"{doc.name}:{text[: match.start()].count(chr(10)) + 2}", block))
    return found


@pytest.mark.parametrize(("where", "block"), _complete_routes_files(), ids=lambda v: v)
def test_every_routes_file_the_docs_show_loads(where: str, block: str, tmp_path: Path) -> None:
    from router.config.loading import load

    env = {}
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", block):
        # A URL for a URL, a Standard Webhooks secret for a signing secret.
        env[name] = (
            "http://127.0.0.1:9/hook"
            if name.endswith("URL")
            else "whsec_" + base64.b64encode(b"k" * 32).decode()
            if "WEBHOOK_SECRET" in name
            else "a-secret-value"
        )
    path = tmp_path / "routes.yaml"
    path.write_text(block)
    load(str(path), env=env)  # a ConfigError fails the test with its one line


def test_the_compose_variables_table_is_what_docker_compose_yml_reads() -> None:
    """docs/deployment.md's table: each variable with the default compose
    gives it (`${VAR:-default}`), or `required` for a `${VAR:?...}`."""
    compose = (ROOT / "docker-compose.yml").read_text()
    in_compose = {name: default for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", compose)}
    in_compose |= {name: "required" for name in re.findall(r"\$\{(\w+):\?", compose)}
    text = (ROOT / "docs" / "deployment.md").read_text()
    table = _section(text, "| variable | default | meaning |", "\n\n")
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        names, defaults = (re.findall(r"`([^`]+)`", c) for c in row.split("|")[1:3])
        cell = row.split("|")[2].strip()
        defaults = defaults or [{"empty": "", "required": "required"}[cell]] * len(names)
        documented |= dict(zip(names, defaults, strict=True))
    assert documented == in_compose

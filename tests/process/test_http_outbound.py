"""`router check` as a process on an `http` destination whose headers and
signing secret come from the environment (docs/outbound-webhooks.md): the
secrets are in neither its output nor its one-line error."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from tests.support.processes import run_cli
from tests.support.routes import write_yaml
from tests.unit.test_config import GOOD

TOKEN = "tok-3e1f0c2b-check-never-shows"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OPTIONS = """\
    method: put
    headers: {Authorization: 'Bearer ${OUT_TOKEN}'}
    signing: {type: standard-webhooks, secret: '${OUT_WHSEC}'}
    body: {to: wa_id, text: mensaje}
"""


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_router_check_shows_no_secret(tmp_path: Path) -> None:
    routes = write_yaml(tmp_path, GOOD.replace("plugin: chatbot", "plugin: http") + OPTIONS)
    result = run_cli(
        "--routes", str(routes), "check", cwd=tmp_path, OUT_TOKEN=TOKEN, OUT_WHSEC=SECRET
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(": ok")
    for secret in (TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in shown(result)

    # A secret that is not whsec_<base64>, a header value with a line break:
    # one line naming the option, without the value.
    for env, option in (
        ({"OUT_TOKEN": TOKEN, "OUT_WHSEC": TOKEN}, "signing.secret"),
        ({"OUT_TOKEN": TOKEN + "\n", "OUT_WHSEC": SECRET}, "headers.Authorization"),
    ):
        result = run_cli("--routes", str(routes), "check", cwd=tmp_path, **env)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"router: config error: {routes}:") and option in line, line
        for secret in (TOKEN, SECRET):
            assert secret not in shown(result)

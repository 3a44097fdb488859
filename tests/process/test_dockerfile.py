"""The Dockerfile, mirrored: its CMD with its ENV starts a working router and
its HEALTHCHECK passes. No Docker engine runs here, so the test reads the
Dockerfile and runs the same command and check on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import httpx

from tests.support import ROOT
from tests.support.plugin import THIRDPARTY_PLUGIN
from tests.support.routes import shipped_routes
from tests.support.servers import free_port, wait_until
from tests.unit.test_dockerfile import final_stage, image_env, instructions


def test_cmd_with_image_env_serves_and_passes_the_healthcheck(tmp_path: Path, clean_redis: str):
    stage = final_stage()
    cmd = json.loads(next(rest for op, rest in stage if op == "CMD"))
    health = next(rest for op, rest in stage if op == "HEALTHCHECK")
    health_cmd = json.loads(health[health.index("CMD") + 3 :].strip())

    # The same command and environment, with this checkout's paths for /app.
    port = free_port()
    env = {k: v.replace("/app", str(tmp_path)) for k, v in image_env().items()}
    routes_file = Path(env["ROUTES_FILE"])
    routes_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped_routes(), routes_file)
    env.update(PORT=str(port), REDIS_URL=clean_redis, PATH=os.environ["PATH"])
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, what="router from the Dockerfile's CMD")
        health_cmd[0] = sys.executable if health_cmd[0] == "python" else health_cmd[0]
        check = subprocess.run(health_cmd, env=env, timeout=10)
        assert check.returncode == 0
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/store_message", json={"mensaje": "Hola!", "wa_id": "1"}
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # STOPSIGNAL SIGTERM exits cleanly


# -- the image's plugins --------------------------------------------------------


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per stage (FROM first)."""
    out: list[list[tuple[str, str]]] = []
    for op, rest in instructions():
        if op == "FROM":
            out.append([])
        out[-1].append((op, rest))
    return out


def shipped_plugins() -> dict[str, str]:
    """Each directory of plugins/ -> the entry-point names it registers."""
    found = {}
    for project in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        meta = tomllib.loads(project.read_text())["project"]
        found[project.parent.name] = " ".join(meta["entry-points"]["router"])
    return found


def copy_build_context(stage: list[tuple[str, str]], src: Path) -> None:
    """The build stage's COPY lines, from this checkout into `src` (its
    WORKDIR), leaving out what .dockerignore and a local build leave."""
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", "build")
    for op, rest in stage:
        if op != "COPY":
            continue
        *sources, dest = rest.split()
        assert not rest.startswith("--"), rest
        for source in sources:
            target = src / dest
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)


def venv_without_the_project(path: Path) -> Path:
    """A fresh virtualenv that sees this test environment's third-party
    packages (litestar, redis, ...) but none of this repository's
    distributions: only what the Dockerfile installs into it is there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = ("message_router", "router_", "__editable__", "_virtualenv", "distutils-precedence")
    deps = path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(ours):
            (deps / entry.name).symlink_to(entry)
    (Path(purelib) / "deps.pth").write_text(f"{deps}\n")
    return python


def run_pip_lines(stage: list[tuple[str, str]], env: dict[str, str], cwd: Path) -> int:
    """The stage's RUN lines that call pip, with pip offline (--no-deps: the
    dependencies are the test environment's; no build isolation: its
    setuptools builds, seconds faster per wheel) and /wheels in `env`."""
    ran = 0
    for op, rest in stage:
        if op != "RUN" or not re.search(r"\bpip\b", rest):
            continue
        line = re.sub(r"\bpip (wheel|install)\b", r"$PIP \1 --no-deps --no-build-isolation", rest)
        line = line.replace("/wheels", "$WHEELS")
        subprocess.run(["bash", "-euc", line], env=env, cwd=cwd, check=True)
        ran += 1
    return ran


def test_the_image_installs_every_shipped_plugin_and_plugin_requirements(tmp_path: Path):
    build, final = stages()[0], stages()[-1]
    args = {n: v.strip('"') for n, _, v in (r.partition("=") for op, r in build if op == "ARG")}
    # A plugin of one's own from outside the repository (an index name or a
    # URL in real life), as the build argument docs/deployment.md shows: the
    # test plugin, by path.
    args["PLUGIN_REQUIREMENTS"] = str(THIRDPARTY_PLUGIN)
    workdir = next(r for op, r in build if op == "WORKDIR")
    src = tmp_path / "context" / workdir.lstrip("/")
    copy_build_context(build, src)
    python = venv_without_the_project(tmp_path / "venv")
    pip = f"{sys.executable} -m pip --python {python}"
    env = {**os.environ, **args, "WHEELS": str(tmp_path / "wheels")}

    assert run_pip_lines(build, {**env, "PIP": f"{sys.executable} -m pip"}, src) == 1
    assert run_pip_lines(final, {**env, "PIP": pip}, tmp_path) == 1

    listed = subprocess.run(
        [python.parent / "router", "plugins"], capture_output=True, text=True, check=True
    ).stdout
    names = set(re.findall(r"\w+", listed))
    shipped = set(" ".join(shipped_plugins().values()).split())
    assert {"chatbot", "whatsapp", "amqp"} <= shipped
    assert shipped <= names, f"the image lacks {sorted(shipped - names)}:\n{listed}"
    assert "recorder" in names, f"PLUGIN_REQUIREMENTS was not installed:\n{listed}"

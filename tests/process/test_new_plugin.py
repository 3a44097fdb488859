"""`router new-plugin` (router/cli/scaffold.py): the package it writes passes
its own test right away, as a user runs it (the plugin installed, found
through its entry point; here pip-installed into a throwaway directory on
PYTHONPATH, nothing installed into the project's environment), with the
generated test's own router (`router serve` and its embedded server).
The name is checked, and nothing is ever overwritten."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from router.cli.main import main
from tests.support.processes import router_env, run_cli
from tests.unit.test_plugin_api import private_imports


def pytest_env(**extra: str) -> dict[str, str]:
    """A user's shell: none of the router's variables, nor this run's pytest's."""
    base = {
        k: v
        for k, v in router_env().items()
        if not k.startswith(("PYTEST_", "COV_")) and k != "ROUTES_FILE"
    }
    return {**base, **extra}


def install(root: Path, site: Path) -> None:
    """pip-install the package into `site` only, built from a copy (the
    generated tree stays as written)."""
    src = site.parent / f"build-{root.name}"
    shutil.copytree(root, src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        timeout=300,
    )


def run_its_tests(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root)],
        cwd=root.parent,
        env=pytest_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("kind", ["delivery", "ingest"])
def test_a_generated_plugin_passes_its_own_test(tmp_path: Path, kind: str) -> None:
    name = f"made_{kind}"
    made = run_cli("new-plugin", name, "--kind", kind, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    root = tmp_path / f"router-{name}"
    assert str(root) in made.stdout and made.stderr == ""
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        f"router_{name}/__init__.py",
        f"router_{name}/py.typed",
        f"tests/test_{name}.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"router-{name}"
    assert project["entry-points"]["router"] == {name: f"router_{name}"}
    assert "message-router" in project["dependencies"]
    for path in root.rglob("*.py"):
        assert private_imports(path.read_text()) == [], path  # router.plugin only

    # Not installed: its test says so, and how.
    alone = run_its_tests(root)
    assert alone.returncode != 0
    assert f"router-{name} is not installed here: pip install -e .[test]" in alone.stdout

    site = tmp_path / "site"
    install(root, site)
    ran = run_its_tests(root, PYTHONPATH=str(site))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = ran.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary
    assert "warning" not in summary  # e.g. no ResourceWarning of an unclosed file


@pytest.mark.parametrize(
    "name",
    [
        *["Sms", "9lives", "my-plugin", "two words", "sms!", "class", "sms_", "a" * 41, "http", ""],
        *["amqp", "mqtt", "telegram", "twilio", "whatsapp", "chatbot", "builtin"],  # installed
    ],
)
def test_a_bad_name_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("router new-plugin: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "router-sms"
    mine.mkdir()
    (mine / "pyproject.toml").write_text("mine")
    assert main(["new-plugin", "sms", "--dir", str(tmp_path)]) == 2
    _, err = capsys.readouterr()
    assert "exists: not overwritten" in err and err.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["pyproject.toml"]
    assert (mine / "pyproject.toml").read_text() == "mine"


def test_a_missing_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "sms", "--dir", str(tmp_path / "nowhere")]) == 2
    _, err = capsys.readouterr()
    assert "is not a directory" in err and err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()


def test_it_needs_no_environment(tmp_path: Path) -> None:
    """It writes files: a broken router environment does not stop it."""
    made = run_cli(
        "new-plugin", "sms", "--dir", str(tmp_path), PORT="not-a-port", ROUTES_FILE="/nowhere"
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "router-sms" / "router_sms" / "__init__.py").is_file()
    assert os.access(tmp_path / "router-sms" / "tests" / "test_sms.py", os.R_OK)


def test_an_installed_router_distribution_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """router-NAME installed (here with no entry point): writing a package of
    that name would replace it when installed."""
    site = tmp_path / "site"
    info = site / "router_pager-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: router-pager\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["new-plugin", "pager", "--dir", str(out_dir)]) == 2
    _, err = capsys.readouterr()
    assert err == (
        "router new-plugin: router-pager is installed here (installing yours would replace it): "
        "choose another name\n"
    )
    assert list(out_dir.iterdir()) == []


def _small_files() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # Python ignores SIGXFSZ


def test_a_write_failing_half_way_leaves_nothing(tmp_path: Path) -> None:
    """Files over 1000 bytes fail (after pyproject.toml and README.md are
    written): nothing is left, so the next run is not refused."""
    failed = subprocess.run(
        [sys.executable, "-m", "router", "new-plugin", "sms", "--dir", str(tmp_path)],
        env=router_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_small_files,  # only sets a limit
    )
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith("router new-plugin: cannot write under ")
    assert failed.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    made = run_cli("new-plugin", "sms", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["router-sms"]
    assert oct((tmp_path / "router-sms").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

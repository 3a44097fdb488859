"""The Dockerfile, read: the final image runs as non-root on port 3000
without dev dependencies. (Its CMD and HEALTHCHECK run on this machine:
tests/process/test_dockerfile.py.)"""

from __future__ import annotations

import re

from tests.support import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in final_stage():
        if op == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                env[name] = value.strip('"')
    return env


def test_image_runs_as_non_root_on_3000_without_dev_dependencies() -> None:
    stage = final_stage()
    assert stage[0][1].startswith("python:3.11-slim")
    users = [rest for op, rest in stage if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "3000") in stage
    assert image_env()["PORT"] == "3000"
    installs = " ".join(rest for op, rest in instructions() if op == "RUN")
    assert "[dev]" not in installs and "pytest" not in installs
    assert "REDIS_URL" not in image_env()  # comes from the environment at run time

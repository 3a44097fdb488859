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


def test_the_deployment_doc_builds_on_the_image_as_its_user_allows() -> None:
    """docs/deployment.md's `FROM` example: on the image compose builds,
    pip as root (the image's user cannot write site-packages), then back to
    the image's user."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```dockerfile\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) == 1, "one Dockerfile example"
    lines = [re.sub(r"^\s+", "", line) for line in blocks[0].splitlines() if line.strip()]
    ops = [line.partition(" ") for line in lines]
    compose_image = re.search(
        r"\$\{ROUTER_IMAGE:-([^}]+)\}", (ROOT / "docker-compose.yml").read_text()
    )
    assert compose_image and ops[0][0] == "FROM" and ops[0][2] == compose_image.group(1)
    users = [(i, rest) for i, (op, _, rest) in enumerate(ops) if op == "USER"]
    pip = next(i for i, (op, _, rest) in enumerate(ops) if op == "RUN" and "pip install" in rest)
    assert [u for i, u in users if i < pip][-1] == "root"
    image_user = [rest for op, rest in final_stage() if op == "USER"][-1]
    assert users[-1][0] > pip and users[-1][1] == image_user

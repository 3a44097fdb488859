"""The Dockerfile, mirrored: its CMD with its ENV starts a working router and
its HEALTHCHECK passes. No Docker engine runs here, so the test reads the
Dockerfile and runs the same command and check on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.routes import shipped_routes
from tests.support.servers import free_port, wait_until
from tests.unit.test_dockerfile import final_stage, image_env


def test_cmd_with_image_env_serves_and_passes_the_healthcheck(tmp_path: Path, clean_redis: str):
    stage = final_stage()
    cmd = json.loads(next(rest for op, rest in stage if op == "CMD"))
    health = next(rest for op, rest in stage if op == "HEALTHCHECK")
    health_cmd = json.loads(health[health.index("CMD") + 3 :].strip())

    # The same command and environment, with this checkout's paths for /app.
    port = free_port()
    env = {k: v.replace("/app", str(tmp_path)) for k, v in image_env().items()}
    shutil.copy(shipped_routes(), tmp_path / "routes.yaml")
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

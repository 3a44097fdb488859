"""Process settings from the environment, read once by the CLI and passed in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    routes_file: str = "routes.yaml"
    redis_url: str | None = None  # None: start the embedded server (router serve)
    data_dir: str = "data"
    host: str = "0.0.0.0"
    port: int = 3000
    log_level: str = "info"
    shutdown_grace: float = 10.0  # seconds in-flight deliveries get on SIGTERM
    embedded_fsync: str = "everysec"  # appendfsync of the embedded server
    admin_token: str | None = field(default=None, repr=False)
    run_workers: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        return cls(
            routes_file=env.get("ROUTES_FILE", "routes.yaml"),
            redis_url=env.get("REDIS_URL") or None,
            data_dir=env.get("ROUTER_DATA_DIR", "data"),
            host=env.get("HOST", "0.0.0.0"),
            port=int(env.get("PORT", "3000")),
            log_level=env.get("LOG_LEVEL", "info").lower(),
            shutdown_grace=float(env.get("ROUTER_SHUTDOWN_GRACE", "10")),
            embedded_fsync=env.get("ROUTER_APPENDFSYNC", "everysec"),
            admin_token=env.get("ROUTER_ADMIN_TOKEN") or None,
            run_workers=env.get("ROUTER_WORKERS", "1") not in ("0", "false", "no"),
        )

"""What the health endpoints' operations say in the OpenAPI document
(`operation_class=` of /healthz and /readyz, router/web/app.py): each
one's answers with their JSON bodies, which are not error bodies."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIResponse, OpenAPIType, Operation, Schema

from router.web.openapi.parts import answer

_STRING, _OBJECT = OpenAPIType.STRING, OpenAPIType.OBJECT

_HEALTH: dict[str, tuple[str, dict[str, OpenAPIResponse]]] = {
    "healthz": (
        "Alive: the process answers HTTP. Asks nothing of Redis.",
        {
            "200": answer(
                "Alive.",
                Schema(
                    type=_OBJECT, required=["status"], properties={"status": Schema(const="ok")}
                ),
                {"status": "ok"},
            )
        },
    ),
    "readyz": (
        "Ready: Redis answers within the ingest deadline, is not out of memory and does not "
        "evict queued messages, with ROUTER_REDIS_WAIT its replicas are in sync (a write's "
        "WAIT can succeed), and the delivery workers run (when this process runs them).",
        {
            "200": answer(
                "Ready.",
                Schema(
                    type=_OBJECT,
                    required=["status", "redis"],
                    properties={
                        "status": Schema(const="ready"),
                        "redis": Schema(const="ok"),
                        "redis_mode": Schema(type=_STRING, enum=["single", "cluster"]),
                        "workers": Schema(const="running"),
                        "warnings": Schema(type=OpenAPIType.ARRAY, items=Schema(type=_STRING)),
                    },
                ),
                {"status": "ready", "redis": "ok", "redis_mode": "single", "workers": "running"},
            ),
            "503": answer(
                "Not ready: `redis` says why (anything but ok), or `workers` is stopped. "
                "Not an error body: the same fields as when ready.",
                Schema(
                    type=_OBJECT,
                    required=["status", "redis"],
                    properties={
                        "status": Schema(const="not ready"),
                        "redis": Schema(type=_STRING),
                        "redis_mode": Schema(type=_STRING, enum=["single", "cluster"]),
                        "workers": Schema(type=_STRING, enum=["running", "stopped"]),
                        "warnings": Schema(type=OpenAPIType.ARRAY, items=Schema(type=_STRING)),
                    },
                ),
                {"status": "not ready", "redis": "Redis unreachable (Connection refused)"},
            ),
        },
    ),
}


def health_operation(name: str) -> type[Operation]:
    """The Operation class of the health endpoint `name` (healthz, readyz)."""
    description, responses = _HEALTH[name]

    @dataclass
    class HealthOperation(Operation):
        def __post_init__(self) -> None:
            self.tags = ["health"]
            self.description = description
            self.responses = dict(responses)

    return HealthOperation

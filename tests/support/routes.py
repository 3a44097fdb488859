"""routes.yaml files for the tests: written as given (`write_yaml`), or one
route, /v1/store_message, to one destination (the chatbot plugin unless told
otherwise), and the Redis keys of that destination."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from router.queue.keys import DestinationKeys
from tests.support import ROOT

STORE = "/v1/store_message"
KEYS = DestinationKeys("chatbot")  # the keys of the destination both writers name


def write_routes(
    path: Path,
    bot_url: str | None,
    *,
    destination: str = "chatbot",
    route: dict[str, Any] | None = None,
    **dest: Any,
) -> Path:
    """A routes.yaml with one route, /v1/store_message, to one destination
    (plugin chatbot at `bot_url` unless `dest` says otherwise), with quick
    timeouts and retries. `route` adds route settings; a `dest` value of
    None removes that setting."""
    settings: dict[str, Any] = {
        "plugin": "chatbot",
        "url": bot_url,
        "ordering_key": "wa_id",
        "max_in_flight": 16,
        "timeout": "2s",
        "lease": "5s",
        "retry": {"initial": "50ms", "factor": 2, "max_delay": "400ms", "jitter": 0.1},
    }
    for k, v in dest.items():
        settings[k] = v
    settings = {k: v for k, v in settings.items() if v is not None}
    config = {
        "routes": [
            {
                "path": STORE,
                "destinations": [destination],
                "fields": {"mensaje": "string", "wa_id": "string"},
                **(route or {}),
            }
        ],
        "destinations": {destination: settings},
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def routes_file(path: Path, bot_url: str = "http://127.0.0.1:9/bot", **route: Any) -> Path:
    """The same route with the destination's defaults for everything but
    plugin, url and ordering key (nothing listens at the default url);
    keyword arguments set route fields."""
    defaults = dict.fromkeys(("max_in_flight", "timeout", "lease", "retry"))
    return write_routes(path, bot_url, route=route, **defaults)


def write_yaml(directory: Path, text: str, name: str = "routes.yaml") -> Path:
    """`text`, dedented, written to directory/name."""
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def committed(path: Path) -> Path:
    """A file of the checkout as committed, not as an operator may have
    edited it (routes.yaml and the compose stack's are theirs to edit): a
    temporary copy of HEAD's; the working tree's file outside a git
    checkout or before its first commit."""
    relative = path.resolve().relative_to(ROOT)
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"HEAD:{relative.as_posix()}"],
            capture_output=True,
            check=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return path
    copy = Path(tempfile.mkdtemp(prefix="router-tests-committed-")) / path.name
    atexit.register(shutil.rmtree, copy.parent, True)
    copy.write_text(text)
    return copy


@functools.cache
def shipped_routes() -> Path:
    """The routes.yaml this repository ships, as committed: what the tests
    about the shipped file read, and the config of router processes that
    name none. Operators edit (or remove) the working tree's copy, as the
    README tells them to; the tests must not depend on it."""
    path = committed(ROOT / "routes.yaml")
    if not path.is_file():
        pytest.skip("no shipped routes.yaml: not a git checkout, and the file was removed")
    return path

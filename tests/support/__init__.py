"""What the tests share, one module per thing; each helper lives in one place.

- `servers`: free ports, waiting, ASGI apps served by uvicorn in a thread
  (`ServerThread`), the router's own app in-process (`serve`).
- `bot`: the chatbot the router delivers to (`Bot`), and the ASGI plumbing
  the fault suite's bot uses too.
- `routes`: routes.yaml files for one chatbot destination, and its Redis keys.
- `messages`: posting messages, and what the router stored or answered.
- `processes`: the `router` command as a real process (`run_cli`,
  `RouterProcess`).
- `plugin`: the third-party test plugin (tests/thirdparty_plugin).

Everything runs real code on loopback: nothing of the router is mocked.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout

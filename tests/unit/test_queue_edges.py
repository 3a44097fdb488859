"""Edge cases found in review that need no server: a config refusing a
too-short dedup TTL, an absurd Standard Webhooks timestamp, a float status
in a bot's error body. (The lane scripts' own: tests/integration.)"""

from __future__ import annotations

import json

import pytest


async def test_enqueue_with_short_dedup_ttl_is_refused_by_config(tmp_path) -> None:
    from router.config import ConfigError
    from router.config.loading import load

    path = tmp_path / "routes.yaml"
    path.write_text(
        json.dumps(
            {
                "routes": [{"path": "/x", "destinations": ["d"], "dedup_ttl": "500ms"}],
                "destinations": {"d": {"plugin": "http", "url": "http://127.0.0.1:9/"}},
            }
        )
    )
    with pytest.raises(ConfigError, match="dedup_ttl: must be at least 1s"):
        load(str(path))


def test_absurd_standard_webhooks_timestamp_is_401_not_500() -> None:
    from router.config import AuthSettings
    from router.http.auth import Authenticator, Unauthorized

    auth = Authenticator(AuthSettings(type="standard-webhooks", secret="whsec_c2VjcmV0"))
    headers = {"webhook-id": "1", "webhook-timestamp": "9" * 400, "webhook-signature": "v1,x"}
    with pytest.raises(Unauthorized):
        auth.check(headers, b"{}")


def test_float_error_status_fails_the_attempt() -> None:
    from router_chatbot import error_in_body

    assert error_in_body({"status": 500.0}) == "bot answered status 500"
    assert error_in_body({"status": 200.0}) is None

"""Meta's WhatsApp Cloud API webhook, shaped as in Meta's webhook reference
(text, image, interactive reply, statuses), signed as Meta signs it: the
payloads of the `format: whatsapp` tests (tests/integration/test_whatsapp.py,
tests/process/test_cluster.py)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

PATH = "/webhooks/whatsapp"
SECRET = "app-secret-123"
WABA = "102290129340398"
PHONE_ID = "106540352242922"


def envelope(*changes_per_entry: list[dict[str, Any]]) -> dict[str, Any]:
    """Meta's webhook: one entry per list of changes' values."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA,
                "changes": [{"value": value, "field": "messages"} for value in values],
            }
            for values in changes_per_entry
        ],
    }


def value(
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    contacts: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    v: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
    }
    if contacts:
        v["contacts"] = [{"profile": {"name": name}, "wa_id": wa} for wa, name in contacts]
    if messages is not None:
        v["messages"] = messages
    if statuses is not None:
        v["statuses"] = statuses
    return v


def text(wa_id: str, wamid: str, body: str, ts: str = "1700000000") -> dict[str, Any]:
    return {"from": wa_id, "id": wamid, "timestamp": ts, "text": {"body": body}, "type": "text"}


def image(wa_id: str, wamid: str) -> dict[str, Any]:
    return {
        "from": wa_id,
        "id": wamid,
        "timestamp": "1700000001",
        "type": "image",
        "image": {
            "caption": "This is a caption",
            "mime_type": "image/jpeg",
            "sha256": "81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3",
            "id": "2754859441498128",
        },
    }


def button_reply(wa_id: str, wamid: str) -> dict[str, Any]:
    return {
        "context": {"from": "15550783881", "id": "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNC"},
        "from": wa_id,
        "id": wamid,
        "timestamp": "1700000002",
        "type": "interactive",
        "interactive": {
            "type": "button_reply",
            "button_reply": {"id": "cancel-button", "title": "Cancel"},
        },
    }


def status(wamid: str, state: str, recipient: str) -> dict[str, Any]:
    s: dict[str, Any] = {
        "id": wamid,
        "status": state,
        "timestamp": "1750857384",
        "recipient_id": recipient,
    }
    if state in ("sent", "delivered"):
        s["conversation"] = {
            "id": "a75d17ad06104c51166f948319b03c6a",
            "origin": {"type": "service"},
        }
        s["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
    if state == "failed":
        s["errors"] = [{"code": 131014, "title": "Request for url https://URL.jpg failed"}]
    return s


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}

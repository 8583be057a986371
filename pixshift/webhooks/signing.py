"""Standard Webhooks signatures: receivers check with any Standard Webhooks library that a
delivery came from PixShift and was not replayed.

The ``webhook-id`` is the event's id, the same on every retry, so receivers can drop duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, the key being the base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(event_id: str, body: bytes, secret: str | None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, stamped now; unsigned when there is no secret."""
    timestamp = int(time.time())
    headers = {"webhook-id": event_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign(secret, event_id, timestamp, body)
    return headers

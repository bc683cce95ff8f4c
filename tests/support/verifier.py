"""An independent Standard Webhooks verifier, written from the specification text for
the tests, so the daemon's signer is checked by code that does not share its logic."""

from __future__ import annotations

import base64
import hashlib
import hmac


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when one of the ``v1`` signatures in ``webhook-signature`` matches."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return False
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    to_sign = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    for item in signatures.split(" "):
        version, _, value = item.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False

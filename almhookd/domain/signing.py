"""Standard Webhooks signatures (https://www.standardwebhooks.com/). Pure.

The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``; the signature is
``v1,`` + base64(HMAC-SHA256(key, content)), the key being the base64-decoded part of a
``whsec_`` secret. During a rotation grace period every valid secret signs, and the
header carries the signatures space-separated.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Final

from almhookd.errors import AlmhookdError

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SCHEME: Final = "standard-webhooks-v1"
SECRET_BYTES: Final = 32


class InvalidSecret(AlmhookdError):
    """The signing secret is not ``whsec_`` followed by base64."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=64)
def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise InvalidSecret() from None
    if not key:
        raise InvalidSecret()
    return key


@functools.lru_cache(maxsize=64)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC already keyed with the secret; each signature starts from a copy (keying
    anew costs OpenSSL an algorithm lookup every time)."""
    return hmac.new(_key(secret), digestmod=hashlib.sha256)


def sign(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    mac = _keyed(secret).copy()
    mac.update(f"{message_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(
    secrets_in_force: Iterable[str], *, message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` header: one signature per valid secret."""
    return " ".join(
        sign(secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in secrets_in_force
    )

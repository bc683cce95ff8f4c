"""Verifying a request: its Standard Webhooks signature or its Basic credentials."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Final

from almhookd.errors import AlmhookdError

DEFAULT_TOLERANCE_SECONDS: Final = 300


class VerificationFailed(AlmhookdError):
    """The request is not a genuine delivery."""


# --- verification -------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise VerificationFailed(f"missing {name} header")


def verify_signature(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check a Standard Webhooks signature; raise :class:`VerificationFailed` if wrong.

    ``secrets``: the ``whsec_`` secrets the receiver trusts (two during a rotation). A
    timestamp further than ``tolerance`` seconds from ``now`` is refused (replays).
    """
    message_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise VerificationFailed("webhook-timestamp is not a number") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise VerificationFailed(
            f"webhook-timestamp is {int(now - timestamp)} s from now (tolerance {tolerance:g} s)"
        )
    signed = f"{message_id}.{timestamp}.".encode() + body
    offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    matched = False
    for secret in secrets:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise VerificationFailed("a configured secret is not whsec_ + base64") from None
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for signature in offered:  # every comparison runs: timing says nothing
            matched |= hmac.compare_digest(signature.encode(), expected.encode())
    if not matched:
        raise VerificationFailed("no valid signature")


def verify_basic(headers: Mapping[str, str], *, username: str, password: str) -> None:
    """Check HTTP Basic credentials in constant time."""
    try:
        scheme, _, encoded = _header(headers, "authorization").partition(" ")
    except VerificationFailed:
        raise VerificationFailed("missing Authorization header") from None
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()
    if scheme.lower() != "basic" or not hmac.compare_digest(
        encoded.strip().encode(), expected.encode()
    ):
        raise VerificationFailed("wrong Basic credentials")


# --- the payload --------------------------------------------------------------------

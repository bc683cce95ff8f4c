"""The tokens every test daemon and test app is configured with."""

from __future__ import annotations

ADMIN_TOKEN = "test-admin-token-0123456789"
INGEST_TOKEN = "test-ingest-token-0123456789"


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def ingest_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INGEST_TOKEN}"}

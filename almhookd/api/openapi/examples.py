"""The examples of the OpenAPI document: what a request or an answer looks like, one
made-up webhook and event throughout. Pure data; ``tests/unit/test_openapi.py``
validates each against its schema, so an example cannot drift from the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from almhookd.domain.catalogue import sample_data

WEBHOOK_ID: Final = "wh_3f9c2a7d41e08b65"
EVENT_ID: Final = "d5fb7071-10a9-46b2-9f9e-79dde346c052"
BATCH_ID: Final = "msg_6b1f0e4c2d9a48f7a3c5e8d2b7f40a19"
NOW_MS: Final = 1_727_414_643_000
HEALTHY: Final[Mapping[str, Any]] = {
    "backlog": {"realtime": 0, "batch": 2, "batchHeld": 2},
    "oldestPendingAgeMs": 61_000,
    "lastSuccessAt": NOW_MS - 5_000,
    "failingSince": None,
    "consecutiveFailures": 0,
    "lastError": None,
    "nextRetryAt": None,
}


def webhook_example(**changes: Any) -> dict[str, Any]:
    """A webhook as the API shows it; ``changes`` as a ``PATCH`` would leave it."""
    return {
        "id": WEBHOOK_ID,
        "name": "LMS sync",
        "description": "enrolments and completions to the HR system",
        "targetUrl": "https://hr.example.org/almhookd",
        "auth": {"type": "signature"},
        "events": ["COURSE_COMPLETED", "COURSE_ENROLLMENT"],
        "active": True,
        "status": "active",
        "disabledReason": None,
        "contactEmail": "lms@example.org",
        "createdAt": NOW_MS - 86_400_000,
        "updatedAt": NOW_MS - 86_400_000,
        **HEALTHY,
        **changes,
    }


def create_example() -> dict[str, Any]:
    return {
        "name": "LMS sync",
        "description": "enrolments and completions to the HR system",
        "targetUrl": "https://hr.example.org/almhookd",
        "auth": {"type": "signature"},
        "events": ["COURSE_ENROLLMENT", "COURSE_COMPLETED"],
        "contactEmail": "lms@example.org",
    }


def test_example() -> dict[str, Any]:
    return {"ok": True, "status": 200, "durationMs": 41, "error": None, "responseBody": "ok"}


def secret_example(*, rotated: bool) -> dict[str, Any]:
    example: dict[str, Any] = {
        "webhookId": WEBHOOK_ID,
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "scheme": "standard-webhooks-v1",
        "algorithm": "HMAC-SHA256",
        "headers": {
            "id": "webhook-id",
            "timestamp": "webhook-timestamp",
            "signature": "webhook-signature",
        },
        "signedContent": "{webhook-id}.{webhook-timestamp}.{body}",
        "createdAt": NOW_MS,
        "previousSecretsValidUntil": [NOW_MS + 86_400_000] if rotated else [],
    }
    if rotated:
        example["graceSeconds"] = 86400.0
    return example


def ingest_example() -> dict[str, Any]:
    return {
        "accountId": 1010,
        "events": [
            {
                "eventId": EVENT_ID,
                "eventName": "COURSE_ENROLLMENT",
                "timestamp": NOW_MS,
                "data": sample_data("COURSE_ENROLLMENT"),
            }
        ],
    }


def stored_event_example() -> dict[str, Any]:
    return {
        "eventId": EVENT_ID,
        "eventName": "COURSE_ENROLLMENT",
        "timestamp": NOW_MS,
        "eventInfo": "1727414643000-123456-01234-0",
        "data": sample_data("COURSE_ENROLLMENT"),
        "accountId": 1010,
        "realtime": True,
        "ingestedAt": NOW_MS + 12,
        "deliveries": [
            {
                "webhookId": WEBHOOK_ID,
                "state": "delivered",
                "attempts": 1,
                "batchId": BATCH_ID,
                "deliveredAt": NOW_MS + 60,
            }
        ],
    }

"""Rows of the SQL backends (SQLite, PostgreSQL) → the interface's values. Pure.

Both backends select the same columns in the same order for webhooks, events,
deliveries and attempts, with a webhook's subscriptions and signing secrets as JSON
arrays, so one mapping serves both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from almhookd.config import Secret
from almhookd.domain.policy import Schedule
from almhookd.domain.webhooks import SigningSecret, Webhook, WebhookChanges
from almhookd.storage.values import (
    AttemptRecord,
    BacklogSummary,
    DeliveryRecord,
    DeliveryState,
    StoredEvent,
)


def to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def to_seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def webhook_from_row(row: Sequence[Any]) -> Webhook:
    """A :class:`Webhook` from one row of a backend's ``SELECT_WEBHOOKS``: the webhook's
    columns, then its event names and its secrets ``[secret, created, expires]`` as
    JSON arrays."""
    signing = sorted(json.loads(row[19]), key=lambda secret: secret[1])
    return Webhook(
        id=row[0],
        name=row[1],
        description=row[2],
        target_url=row[3],
        auth_type=row[4],
        auth_username=row[5],
        auth_password=Secret(row[6]) if row[6] is not None else None,
        contact_email=row[7],
        status=row[8],
        disabled_reason=row[9],
        created_at_ms=row[10],
        updated_at_ms=row[11],
        schedule=Schedule(
            consecutive_failures=row[12],
            failing_since=to_seconds(row[13]),
            next_attempt_at=to_seconds(row[14]),
            last_success_at=to_seconds(row[15]),
            last_error=row[16],
            last_reminder_at=to_seconds(row[17]),
        ),
        events=frozenset(json.loads(row[18])),
        secrets=tuple(
            SigningSecret(secret=Secret(secret), created_at_ms=created, expires_at_ms=expires)
            for secret, created, expires in signing
        ),
    )


def changed_columns(changes: WebhookChanges, now_ms: int) -> dict[str, object]:
    """The ``webhooks`` columns a ``PATCH`` sets, with their values: ``active: false``
    archives (``inactive``); ``active: true`` re-enables and clears the failure
    schedule; an auth type other than ``basic`` clears the basic credentials."""
    columns: dict[str, object] = {"updated_at_ms": now_ms}
    for column, value in (
        ("name", changes.name),
        ("description", changes.description),
        ("target_url", changes.target_url),
        ("contact_email", changes.contact_email),
    ):
        if value is not None:
            columns[column] = value
    if changes.auth_type is not None:
        columns["auth_type"] = changes.auth_type
        basic = changes.auth_type == "basic"
        columns["auth_username"] = changes.auth_username if basic else None
        columns["auth_password"] = (
            changes.auth_password.reveal() if basic and changes.auth_password else None
        )
    if changes.active is not None:
        columns["status"] = "active" if changes.active else "inactive"
        columns["disabled_reason"] = None
        if changes.active:
            columns.update(
                consecutive_failures=0,
                failing_since_ms=None,
                next_attempt_at_ms=None,
                last_reminder_at_ms=None,
            )
    return columns


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """An event from ``seq, event_id, event_name, account_id, timestamp_ms, realtime,
    ingested_at_ms, body`` and its deliveries as a JSON array of ``[webhook_id, state,
    attempts, batch_id, delivered_at_ms]``, listed by webhook id."""
    deliveries = sorted(json.loads(row[8]), key=lambda delivery: str(delivery[0]))
    return StoredEvent(
        seq=row[0],
        event_id=row[1],
        event_name=row[2],
        account_id=row[3],
        timestamp_ms=row[4],
        realtime=bool(row[5]),
        ingested_at_ms=row[6],
        body=json.loads(row[7]),
        deliveries=tuple(
            DeliveryState(
                webhook_id=d[0], state=d[1], attempts=d[2], batch_id=d[3], delivered_at_ms=d[4]
            )
            for d in deliveries
        ),
    )


def delivery_record(row: Sequence[Any]) -> DeliveryRecord:
    """One row of a backend's ``DELIVERIES_SQL``."""
    return DeliveryRecord(
        seq=row[0],
        eventId=row[1],
        eventName=row[2],
        ingestedAt=row[3],
        state=row[4],
        attempts=row[5],
        batchId=row[6],
        deliveredAt=row[7],
        dueAt=row[8],
    )


def attempt_record(row: Sequence[Any]) -> AttemptRecord:
    """``id, batch_id, started_at_ms, duration_ms, event_count, status, error,
    response_body`` of the attempts log."""
    return AttemptRecord(
        id=row[0],
        batchId=row[1],
        startedAt=row[2],
        durationMs=row[3],
        eventCount=row[4],
        status=row[5],
        error=row[6],
        responseBody=row[7],
    )


def backlog_counts(rows: Iterable[Sequence[Any]]) -> tuple[BacklogSummary, int | None]:
    """A backlog summary from ``realtime, held, count, lowest seq`` rows (``oldest``
    left None), and the lowest seq of all, whose ingest time is the oldest."""
    summary = BacklogSummary(realtime=0, batch=0, held=0, oldest=None)
    first: int | None = None
    for realtime, held, count, lowest in rows:
        if not count:
            continue
        if realtime:
            summary["realtime"] += count
        else:
            summary["batch"] += count
        if held:
            summary["held"] = count
        first = lowest if first is None else min(first, lowest)
    return summary, first

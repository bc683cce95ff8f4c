"""The ingest transaction: a group of requests' events stored and fanned out in one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from almhookd.domain.events import NewEvent
from almhookd.storage.sqlite.queries import SUBSCRIBERS_SQL, event_key, insert_many
from almhookd.storage.values import (
    AppendResult,
)


class PendingAppend(NamedTuple):
    """One ``append`` call waiting for the group commit."""

    events: Sequence[NewEvent]
    done: asyncio.Future[AppendResult]


def insert_events(
    db: sqlite3.Connection, group: list[PendingAppend], now_ms: int
) -> list[AppendResult]:
    """The group commit's transaction body (on the writer thread).

    Stores the new events and, in the same transaction, fans them out: every active
    webhook subscribed to an event's name gets a pending delivery, real-time events due
    at once, non-real-time ones held (``due_at_ms`` NULL) for the batch scheduler.
    """
    keys = {event.event_id: event_key(event.event_id) for p in group for event in p.events}
    known = {
        row[0]
        for row in db.execute(
            "SELECT event_id FROM events WHERE event_key IN (SELECT value FROM json_each(?))",
            (json.dumps(list(keys.values())),),
        )
    }
    subscribers: dict[str, list[str]] = {}
    # The group's names only: a webhook subscribed to the whole catalogue is 27 rows,
    # and each row read hands the GIL to this thread and back.
    event_names = sorted({event.event_name for p in group for event in p.events})
    for event_name, webhook_id in db.execute(SUBSCRIBERS_SQL, (json.dumps(event_names),)):
        subscribers.setdefault(event_name, []).append(webhook_id)
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    rows: list[tuple[object, ...]] = []
    deliveries: list[tuple[str, int, int | None, int]] = []
    results = []
    for pending in group:
        names: list[str] = []
        for event in pending.events:
            if event.event_id in known:
                continue
            known.add(event.event_id)
            names.append(event.event_name)
            seq += 1
            rows.append(
                (
                    seq,
                    keys[event.event_id],
                    event.event_id,
                    event.event_name,
                    event.account_id,
                    event.timestamp_ms,
                    int(event.realtime),
                    now_ms,
                    event.body,
                )
            )
            due = now_ms if event.realtime else None
            kind = int(event.realtime)
            deliveries.extend(
                (webhook, seq, due, kind) for webhook in subscribers.get(event.event_name, ())
            )
        results.append(
            AppendResult(
                accepted=len(names),
                duplicates=len(pending.events) - len(names),
                accepted_names=tuple(names),
            )
        )
    insert_many(
        db,
        "INSERT INTO events (seq, event_key, event_id, event_name, account_id,"
        " timestamp_ms, realtime, ingested_at_ms, body) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    insert_many(
        db,
        "INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms, realtime) VALUES ",
        "(?, ?, 'pending', ?, ?)",
        deliveries,
    )
    return results

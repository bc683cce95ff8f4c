"""The SQL the SQLite backend runs (rows become values in ``almhookd.storage.rows``).

No connection of its own: the statements and the functions that run them take the
writer's connection (inside a transaction) or go through the reader.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from almhookd.domain.webhooks import Webhook
from almhookd.errors import (
    StorageError,
    StorageFull,
)
from almhookd.storage.rows import webhook_from_row

#: Webhooks with their subscriptions and signing secrets as JSON arrays: one statement,
#: so one snapshot, whether run on the reader or inside a write transaction.
SELECT_WEBHOOKS: Final = (
    "SELECT w.id, w.name, w.description, w.target_url, w.auth_type, w.auth_username,"
    " w.auth_password, w.contact_email, w.status, w.disabled_reason, w.created_at_ms,"
    " w.updated_at_ms, w.consecutive_failures, w.failing_since_ms, w.next_attempt_at_ms,"
    " w.last_success_at_ms, w.last_error, w.last_reminder_at_ms,"
    " (SELECT json_group_array(e.event_name) FROM webhook_events AS e"
    " WHERE e.webhook_id = w.id),"
    " (SELECT json_group_array(json_array(s.secret, s.created_at_ms, s.expires_at_ms))"
    " FROM signing_secrets AS s WHERE s.webhook_id = w.id)"
    " FROM webhooks AS w"
)


def written_webhook(db: sqlite3.Connection, webhook_id: str) -> Webhook:
    """The webhook as the write transaction that changed it left it: read inside that
    transaction, so the caller never depends on the reader catching up."""
    row = db.execute(SELECT_WEBHOOKS + " WHERE w.id = ?", (webhook_id,)).fetchone()
    return webhook_from_row(row)


def event_key(event_id: str) -> int:
    """The 64-bit key under which an event id is indexed (stable across processes)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Rows per multi-row INSERT: one SQLite call (and one GIL hand-over) per chunk.
INSERT_CHUNK: Final = 200


def insert_many(
    db: sqlite3.Connection, head: str, placeholders: str, rows: Sequence[Sequence[object]]
) -> None:
    """Insert ``rows`` with multi-row ``VALUES`` lists rather than ``executemany``.

    ``executemany`` gives up the GIL inside every row's step and must win it back from
    the busy event loop each time; chunks of rows make that a few hand-overs per commit.
    """
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        db.execute(
            head + ", ".join([placeholders] * len(chunk)),
            [value for row in chunk for value in row],
        )


#: The active webhooks subscribed to some event names (parameter: a JSON array of names).
SUBSCRIBERS_SQL: Final = (
    "SELECT s.event_name, s.webhook_id FROM webhook_events AS s"
    " JOIN webhooks AS w ON w.id = s.webhook_id"
    " WHERE s.event_name IN (SELECT value FROM json_each(?)) AND w.status = 'active'"
)


#: A webhook's outstanding deliveries (two parameters: its id twice), through the two
#: partial indexes that together hold every pending delivery.
OUTSTANDING_SQL: Final = (
    "SELECT event_seq, due_at_ms FROM deliveries INDEXED BY deliveries_ready"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL"
    " UNION ALL SELECT event_seq, due_at_ms FROM deliveries INDEXED BY deliveries_held"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NULL"
)


#: The next due deliveries after a given event (parameters: webhook id, now, retained
#: since, after seq, limit): nothing above the seq is in a batch being sent.
CLAIM_SQL: Final = (
    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body,"
    " e.realtime FROM deliveries AS d INDEXED BY deliveries_ready"
    " JOIN events AS e ON e.seq = d.event_seq"
    " WHERE d.webhook_id = ? AND d.state = 'pending' AND d.due_at_ms IS NOT NULL"
    " AND d.due_at_ms <= ? AND e.ingested_at_ms >= ? AND d.event_seq > ?"
    " ORDER BY d.event_seq LIMIT ?"
)


#: The same, skipping those in batches being sent (the after seq is 0): for when some
#: below the batches being sent are pending again (a replay, a release, a dissolved
#: batch). It walks every event being sent, so it is the exception.
CLAIM_AROUND_SENDING_SQL: Final = CLAIM_SQL.replace(
    " ORDER BY",
    " AND d.event_seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = ?) ORDER BY",
)


#: The last event of the batches being sent (0: none), how many events they hold, and
#: how many pending deliveries are due up to that last one (parameters: the webhook id,
#: twice). The two counts differ when some below it are pending outside the batches
#: (after a replay, a release, a dissolved batch). Index only, no bodies.
SENDING_HIGH_WATER_SQL: Final = (
    "SELECT high, sending, (SELECT count(*) FROM deliveries INDEXED BY deliveries_ready"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL"
    " AND event_seq <= high)"
    " FROM (SELECT coalesce(max(json_extract(event_seqs, '$[#-1]')), 0) AS high,"
    " coalesce(sum(json_array_length(event_seqs)), 0) AS sending"
    " FROM request_batches INDEXED BY request_batches_sending"
    " WHERE webhook_id = ? AND state = 'sending')"
)


#: Acknowledged deliveries (parameters: delivered at, a JSON array of [event_seq,
#: batch_id] pairs, the webhook id), pending ones only: some may have expired in flight.
#: MATERIALIZED makes SQLite walk the pairs and look each delivery up by its primary key;
#: without it, it may walk the webhook's every delivery and search the pairs for each.
DELIVERED_SQL: Final = (
    "WITH acked (event_seq, batch_id) AS MATERIALIZED"
    " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))"
    " UPDATE deliveries SET state = 'delivered', delivered_at_ms = ?1,"
    " attempts = attempts + 1, batch_id = acked.batch_id FROM acked"
    " WHERE deliveries.webhook_id = ?3 AND deliveries.state = 'pending'"
    " AND deliveries.event_seq = acked.event_seq"
)


def storage_error(error: sqlite3.Error, path: Path) -> StorageError:
    if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(f"{path}: database or disk is full")
    return StorageError(f"{path}: {error}")

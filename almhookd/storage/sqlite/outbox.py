"""The delivery worker's outbox: claiming request batches and recording attempts."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence

from almhookd.domain.batching import Claim, EventColumns, RequestBatch, pack, request_batch
from almhookd.domain.policy import Schedule
from almhookd.storage.rows import to_ms
from almhookd.storage.sqlite.engine import SqliteEngine
from almhookd.storage.sqlite.queries import (
    CLAIM_AROUND_SENDING_SQL,
    CLAIM_SQL,
    DELIVERED_SQL,
    OUTSTANDING_SQL,
    SENDING_HIGH_WATER_SQL,
    insert_many,
)
from almhookd.storage.values import (
    RESPONSE_EXCERPT_CHARS,
    Attempt,
)


def claim_due(db: sqlite3.Connection, webhook_id: str, claim: Claim) -> list[RequestBatch]:
    """Up to ``claim.batches`` batches, in order, and no more once they hold
    ``claim.total_bytes``, packed by :func:`_pack` from one query and recorded as being
    sent by one statement.

    Claims usually continue after the last event being sent, without walking the batches
    in flight. Only while a delivery below it is pending outside them (after a replay, a
    release, a dissolved batch) does a claim skip them one by one. A claim takes every
    free due delivery up to its own last event, so the next one continues after that.
    """
    if claim.batches <= 0:
        return []
    high_water, sending, ready_below = db.execute(
        SENDING_HIGH_WATER_SQL, (webhook_id, webhook_id)
    ).fetchone()
    if ready_below == sending:
        sql = CLAIM_SQL
        parameters: tuple[object, ...] = (
            webhook_id, claim.now_ms, claim.retained_since_ms, high_water
        )  # fmt: skip
    else:
        sql = CLAIM_AROUND_SENDING_SQL
        parameters = (webhook_id, claim.now_ms, claim.retained_since_ms, 0, webhook_id)
    # One statement for every batch: each further SQLite call would hand the GIL back
    # and forth with the busy event loop. The limit is a bound; rows are read lazily.
    limit = claim.batches * max(claim.max_events, claim.max_batch_events)
    cursor = db.execute(sql, (*parameters, limit))
    try:
        packed = list(pack(cursor.fetchmany, claim))
    finally:
        cursor.close()
    batches = [
        request_batch("msg_" + uuid.uuid4().hex, webhook_id, events, created_at_ms=claim.now_ms)
        for events in packed
    ]
    insert_many(
        db,
        "INSERT INTO request_batches (id, webhook_id, created_at_ms, state, event_seqs) VALUES ",
        "(?, ?, ?, 'sending', ?)",
        [(batch.id, webhook_id, claim.now_ms, json.dumps(batch.event_seqs)) for batch in batches],
    )
    return batches


class OutboxOps(SqliteEngine):
    """Claim and record, for one worker per webhook."""

    async def in_flight_batches(self, webhook_id: str) -> list[RequestBatch]:
        """The batches recorded as being sent, oldest first (after a crash: to send
        again, same ids, before anything new is claimed)."""

        def work(db: sqlite3.Connection) -> list[RequestBatch]:
            batches = []
            for batch_id, created_at_ms, attempts, seqs in db.execute(
                "SELECT id, created_at_ms, attempts, event_seqs FROM request_batches"
                " INDEXED BY request_batches_sending WHERE webhook_id = ? AND state = 'sending'"
                " ORDER BY rowid",
                (webhook_id,),
            ).fetchall():
                events = db.execute(
                    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body"
                    " FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
                    " WHERE d.webhook_id = ? AND d.event_seq IN (SELECT value FROM json_each(?))"
                    " AND d.state = 'pending' ORDER BY d.event_seq",
                    (webhook_id, seqs),
                ).fetchall()
                if not events:
                    db.execute(
                        "UPDATE request_batches SET state = 'expired' WHERE id = ?", (batch_id,)
                    )
                    continue
                batches.append(
                    request_batch(
                        batch_id,
                        webhook_id,
                        EventColumns(*zip(*events, strict=True)),
                        created_at_ms=created_at_ms,
                        attempts=attempts,
                    )
                )
            return batches

        return await self._write(work, durable=False)

    async def claim_batches(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        """Pack the next due deliveries into up to ``claim.batches`` request batches,
        each recorded before it is sent.

        In ingest order, events of one account and one kind only: real-time events up to
        ``claim.max_events``, released non-real-time events up to
        ``claim.max_batch_events``, and about ``claim.max_bytes`` (one event always
        fits). Events older than ``claim.retained_since_ms`` are left for expiry.
        """
        return await self._write(lambda db: claim_due(db, webhook_id, claim), durable=False)

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
    ) -> list[RequestBatch]:
        """Log attempts, in order; mark acknowledged batches delivered; store the
        webhook's schedule after them.

        With ``claim_next``, the next batches are claimed in the same transaction (one
        trip to the writer for several requests while a backlog drains) and returned.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> list[RequestBatch]:
            # A handful of statements whatever the number of attempts: each SQLite call
            # hands the GIL to this thread and back, and the event loop is busy.
            insert_many(
                db,
                "INSERT INTO attempts (webhook_id, batch_id, started_at_ms, duration_ms,"
                " event_count, status, error, response_body) VALUES ",
                "(?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        webhook_id,
                        attempt.batch.id,
                        attempt.started_at_ms,
                        attempt.outcome.duration_ms,
                        len(attempt.batch.event_seqs),
                        attempt.outcome.status,
                        attempt.outcome.error,
                        attempt.outcome.response_body[:RESPONSE_EXCERPT_CHARS],
                    )
                    for attempt in attempts
                ],
            )
            # A batch appears once per record: a failed attempt is recorded at once.
            delivered = [a.batch for a in attempts if a.outcome.ok]
            failed = [a.batch for a in attempts if not a.outcome.ok]
            db.execute(
                "UPDATE request_batches SET attempts = attempts + 1, state = CASE WHEN id IN"
                " (SELECT value FROM json_each(?1)) THEN 'delivered' ELSE state END"
                " WHERE id IN (SELECT value FROM json_each(?2))",
                (
                    json.dumps([batch.id for batch in delivered]),
                    json.dumps([attempt.batch.id for attempt in attempts]),
                ),
            )
            if delivered:
                db.execute(
                    DELIVERED_SQL,
                    (
                        now_ms,
                        json.dumps([[s, b.id] for b in delivered for s in b.event_seqs]),
                        webhook_id,
                    ),
                )
            if failed:
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1 WHERE webhook_id = ?"
                    " AND state = 'pending' AND event_seq IN (SELECT value FROM json_each(?))",
                    (webhook_id, json.dumps([s for b in failed for s in b.event_seqs])),
                )
            db.execute(
                "UPDATE webhooks SET consecutive_failures = ?, failing_since_ms = ?,"
                " next_attempt_at_ms = ?, last_success_at_ms = ?, last_error = ?,"
                " last_reminder_at_ms = ? WHERE id = ?",
                (
                    schedule.consecutive_failures,
                    to_ms(schedule.failing_since),
                    to_ms(schedule.next_attempt_at),
                    to_ms(schedule.last_success_at),
                    schedule.last_error,
                    to_ms(schedule.last_reminder_at),
                    webhook_id,
                ),
            )
            if disable_reason is not None:
                db.execute(
                    "UPDATE webhooks SET status = 'disabled', disabled_reason = ?,"
                    " updated_at_ms = ? WHERE id = ?",
                    (disable_reason, now_ms, webhook_id),
                )
            return claim_due(db, webhook_id, claim_next) if claim_next else []

        return await self._write(work, durable=False)

    async def backlog(self, webhook_id: str) -> int:
        """Deliveries of this webhook not yet delivered nor expired."""
        rows = await self._fetchall(
            f"SELECT count(*) FROM ({OUTSTANDING_SQL})",  # noqa: S608 - a constant subquery
            (webhook_id, webhook_id),
        )
        return int(rows[0][0])

    async def next_due_ms(self, webhook_id: str, *, after_ms: int) -> int | None:
        rows = await self._fetchall(
            "SELECT min(due_at_ms) FROM deliveries INDEXED BY deliveries_ready"
            " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL"
            " AND due_at_ms > ?",
            (webhook_id, after_ms),
        )
        return None if rows[0][0] is None else int(rows[0][0])

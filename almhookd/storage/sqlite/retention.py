"""Retention and the batch flush: expiry, pruning, releasing held deliveries."""

from __future__ import annotations

import sqlite3
from typing import Final

from almhookd.storage.sqlite.engine import SqliteEngine
from almhookd.storage.values import (
    ExpiredCount,
)

#: Rows one pruning statement deletes, so pruning never holds the writer for long.
PRUNE_CHUNK: Final = 5_000


class RetentionOps(SqliteEngine):
    """The maintenance pass's and the flusher's writes."""

    async def expire(self, *, retained_since_ms: int) -> list[ExpiredCount]:
        """Mark undelivered events older than the retention as expired, per webhook.

        A batch in flight that holds an expired event is dissolved: its other events go
        back to pending, to be packed again under a new id.
        """

        def work(db: sqlite3.Connection) -> list[ExpiredCount]:
            counts = [
                ExpiredCount(webhook_id=row[0], events=row[1])
                for row in db.execute(
                    "SELECT d.webhook_id, count(*) FROM events AS e"
                    " JOIN deliveries AS d ON d.event_seq = e.seq"
                    " WHERE e.ingested_at_ms < ? AND d.state = 'pending'"
                    " GROUP BY d.webhook_id ORDER BY d.webhook_id",
                    (retained_since_ms,),
                )
            ]
            if not counts:
                return []
            # Batches being sent that hold an expired event are dissolved: their other
            # events are claimed again, under a new id.
            db.executemany(
                "UPDATE request_batches INDEXED BY request_batches_sending SET state = 'expired'"
                " WHERE webhook_id = ? AND state = 'sending' AND EXISTS (SELECT 1 FROM"
                " json_each(request_batches.event_seqs) AS j JOIN events AS e ON e.seq = j.value"
                " WHERE e.ingested_at_ms < ?)",
                [(count.webhook_id, retained_since_ms) for count in counts],
            )
            db.execute(
                "UPDATE deliveries SET state = 'expired' WHERE state = 'pending'"
                " AND event_seq IN (SELECT seq FROM events WHERE ingested_at_ms < ?)",
                (retained_since_ms,),
            )
            return counts

        return await self._write(work, durable=False)

    async def prune(self, *, retained_since_ms: int) -> int:
        """Delete events, batches and attempts older than the retention (after expiry)."""
        removed = 0
        for statement in (
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
            " WHERE ingested_at_ms < ? ORDER BY seq LIMIT {chunk})",
            "DELETE FROM request_batches WHERE id IN (SELECT id FROM request_batches"
            " WHERE created_at_ms < ? AND state != 'sending' LIMIT {chunk})",
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
            " WHERE started_at_ms < ? ORDER BY id LIMIT {chunk})",
        ):
            sql = statement.format(chunk=PRUNE_CHUNK)

            def delete_chunk(db: sqlite3.Connection, sql: str = sql) -> int:
                return int(db.execute(sql, (retained_since_ms,)).rowcount)

            while (count := await self._write(delete_chunk, durable=False)) > 0:
                removed += count
        return removed

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        """The batch flush: every held non-real-time delivery becomes due now.

        Records the flush time in the same transaction, so a restart neither skips nor
        repeats a flush. Returns the released count per webhook.
        """

        def work(db: sqlite3.Connection) -> dict[str, int]:
            counts = {
                row[0]: int(row[1])
                for row in db.execute(
                    "SELECT webhook_id, count(*) FROM deliveries INDEXED BY deliveries_held"
                    " WHERE state = 'pending' AND due_at_ms IS NULL"
                    " GROUP BY webhook_id ORDER BY webhook_id"
                )
            }
            if counts:
                db.execute(
                    "UPDATE deliveries INDEXED BY deliveries_held SET due_at_ms = ?"
                    " WHERE state = 'pending' AND due_at_ms IS NULL",
                    (now_ms,),
                )
            db.execute(
                "INSERT INTO daemon_state (key, value) VALUES ('batch.last_flush_ms', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(now_ms),),
            )
            return counts

        return await self._write(work, durable=True)

    async def last_flush_ms(self) -> int | None:
        rows = await self._fetchall(
            "SELECT value FROM daemon_state WHERE key = 'batch.last_flush_ms'"
        )
        return int(rows[0][0]) if rows else None

    async def held_backlog(self, webhook_id: str) -> int:
        """Non-real-time deliveries of this webhook waiting for the next flush."""
        rows = await self._fetchall(
            "SELECT count(*) FROM deliveries WHERE webhook_id = ?"
            " AND state = 'pending' AND due_at_ms IS NULL",
            (webhook_id,),
        )
        return int(rows[0][0])

"""Retention and the batch flush: expiry, pruning, releasing held deliveries."""

from __future__ import annotations

from typing import Final

import asyncpg

from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.queries import REWIND_CONFLICT_SQL, REWIND_FROM_SQL, SWEEP_LOCK_SQL
from almhookd.storage.values import ExpiredCount, Notice

#: Rows one pruning statement deletes, so pruning never holds locks for long.
PRUNE_CHUNK: Final = 5_000

_PRUNE: Final = (
    "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
    " WHERE ingested_at_ms < $1 ORDER BY seq LIMIT {chunk})",
    "DELETE FROM request_batches WHERE id IN (SELECT id FROM request_batches"
    " WHERE created_at_ms < $1 AND state != 'sending' LIMIT {chunk})",
    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
    " WHERE started_at_ms < $1 ORDER BY id LIMIT {chunk})",
)


def _count(status: str) -> int:
    """The row count of a command's status (``DELETE 5``, ``UPDATE 0``)."""
    return int(status.rsplit(" ", 1)[-1])


class RetentionOps(PostgresEngine):
    """The maintenance pass's and the flusher's writes."""

    async def expire(self, *, retained_since_ms: int) -> list[ExpiredCount]:
        """Mark undelivered events older than the retention as expired, per webhook; a
        batch in flight that holds one is dissolved (its other events are claimed again,
        under a new id)."""

        async def work(connection: asyncpg.Connection) -> list[ExpiredCount]:
            await connection.execute(SWEEP_LOCK_SQL)
            # Counted from what the update changed: one snapshot for both.
            counts = [
                ExpiredCount(webhook_id=row[0], events=row[1])
                for row in await connection.fetch(
                    "WITH expired AS (UPDATE deliveries SET state = 'expired'"
                    " WHERE state = 'pending' AND event_seq IN"
                    " (SELECT seq FROM events WHERE ingested_at_ms < $1) RETURNING webhook_id)"
                    " SELECT webhook_id, count(*) FROM expired"
                    " GROUP BY webhook_id ORDER BY webhook_id",
                    retained_since_ms,
                )
            ]
            if not counts:
                return []
            # The dissolved batches' other events are due again below the cursor.
            await connection.execute(
                "WITH dissolved AS (UPDATE request_batches AS b SET state = 'expired'"  # noqa: S608 - constants
                " WHERE b.webhook_id = ANY($1::text[]) AND b.state = 'sending' AND EXISTS"
                " (SELECT 1 FROM unnest(b.event_seqs) AS j (seq) JOIN events AS e"
                " ON e.seq = j.seq WHERE e.ingested_at_ms < $2)"
                " RETURNING b.webhook_id, b.event_seqs[1] AS first)"
                f" {REWIND_FROM_SQL} SELECT webhook_id, min(first) FROM dissolved"
                f" GROUP BY webhook_id ORDER BY webhook_id{REWIND_CONFLICT_SQL}",
                [count.webhook_id for count in counts],
                retained_since_ms,
            )
            return counts

        return await self._write(work, durable=False)

    async def prune(self, *, retained_since_ms: int) -> int:
        """Delete events, batches and attempts older than the retention (after expiry)."""
        async with self._call():  # a close() arriving between chunks lets it finish
            return await self._prune(retained_since_ms)

    async def _prune(self, retained_since_ms: int) -> int:
        removed = 0
        for statement in _PRUNE:
            sql = statement.format(chunk=PRUNE_CHUNK)

            async def delete_chunk(connection: asyncpg.Connection, sql: str = sql) -> int:
                return _count(await connection.execute(sql, retained_since_ms))

            while (count := await self._write(delete_chunk, durable=False)) > 0:
                removed += count
        return removed

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        """The batch flush: every held non-real-time delivery becomes due now; the flush
        time is recorded in the same transaction."""

        async def work(connection: asyncpg.Connection) -> dict[str, int]:
            await connection.execute(SWEEP_LOCK_SQL)
            # Counted from what the update changed: one snapshot for both.
            counts = {
                row[0]: int(row[1])
                for row in await connection.fetch(
                    "WITH released AS (UPDATE deliveries SET due_at_ms = $1"  # noqa: S608 - constants
                    " WHERE state = 'pending' AND due_at_ms IS NULL"
                    " RETURNING webhook_id, event_seq),"
                    # Released below the cursors: their claims look again from there.
                    # In webhook order, as expiry's rewinds: never a deadlock.
                    f" rewound AS ({REWIND_FROM_SQL} SELECT webhook_id, min(event_seq)"
                    f" FROM released GROUP BY webhook_id ORDER BY webhook_id"
                    f"{REWIND_CONFLICT_SQL})"
                    " SELECT webhook_id, count(*) FROM released"
                    " GROUP BY webhook_id ORDER BY webhook_id",
                    now_ms,
                )
            }
            await connection.execute(
                "INSERT INTO daemon_state (key, value) VALUES ('batch.last_flush_ms', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(now_ms),
            )
            return counts

        return await self._write(work, notice=Notice(kind="flush", origin=self.process_id))

    async def last_flush_ms(self) -> int | None:
        rows = await self._fetch("SELECT value FROM daemon_state WHERE key = 'batch.last_flush_ms'")
        return int(rows[0][0]) if rows else None

    async def held_backlog(self, webhook_id: str) -> int:
        rows = await self._fetch(
            "SELECT count(*) FROM deliveries WHERE webhook_id = $1"
            " AND state = 'pending' AND due_at_ms IS NULL",
            webhook_id,
        )
        return int(rows[0][0])

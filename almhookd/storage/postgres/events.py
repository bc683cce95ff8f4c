"""The event log: storing events (with their fan-out) and reading them back.

**Ingest order across processes.** Each ingest transaction takes one
transaction-scoped advisory lock before it numbers its events and keeps it until it
commits: ``seq`` values become visible in increasing order, so a delivery worker that
read up to ``seq`` n never later finds a smaller one committed. A sequence alone would
not do: two transactions that drew 10 and 11 may commit 11 first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from almhookd.domain.events import NewEvent
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.rows import stored_event
from almhookd.storage.values import AppendResult, StoredEvent

#: ``pg_advisory_xact_lock`` key held by each ingest transaction while it numbers its
#: events: "ingest" in ASCII.
INGEST_LOCK: Final = int.from_bytes(b"ingest", "big")


class EventOps(PostgresEngine):
    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store ``events`` durably (committed, with the server's ``synchronous_commit``)
        and fan them out to the active webhooks subscribed to them, in one transaction.

        Calls made in one process commit in the order they were made (an asyncio lock,
        first come first served): the advisory lock alone would order them by whichever
        connection reached the server first.
        """
        async with self._call(), self._ingest_order:
            return await self._append(events)

    async def _append(self, events: Sequence[NewEvent]) -> AppendResult:
        now_ms = self._now_ms()
        fresh: list[NewEvent] = []

        async def work(connection: asyncpg.Connection) -> None:
            # Acknowledged means on disk, whatever the server's default says.
            await connection.execute("SET LOCAL synchronous_commit = on")
            await connection.execute("SELECT pg_advisory_xact_lock($1)", INGEST_LOCK)
            known = {
                row[0]
                for row in await connection.fetch(
                    "SELECT event_id FROM events WHERE event_id = ANY($1::text[])",
                    [event.event_id for event in events],
                )
            }
            for event in events:
                if event.event_id not in known:
                    known.add(event.event_id)
                    fresh.append(event)
            if not fresh:
                return
            first = await connection.fetchval("SELECT coalesce(max(seq), 0) + 1 FROM events")
            seqs = list(range(first, first + len(fresh)))
            await connection.execute(
                "INSERT INTO events (seq, event_id, event_name, account_id, timestamp_ms,"
                " realtime, ingested_at_ms, body)"
                " SELECT s, i, n, a, t, r, $7, b FROM unnest($1::bigint[], $2::text[],"
                " $3::text[], $4::bigint[], $5::bigint[], $6::boolean[], $8::text[])"
                " AS u (s, i, n, a, t, r, b)",
                seqs,
                [e.event_id for e in fresh],
                [e.event_name for e in fresh],
                [e.account_id for e in fresh],
                [e.timestamp_ms for e in fresh],
                [e.realtime for e in fresh],
                now_ms,
                [e.body for e in fresh],
            )
            # Real-time deliveries are due now; batch ones are held (due NULL) for the
            # batch flush.
            await connection.execute(
                "INSERT INTO deliveries (webhook_id, event_seq, due_at_ms, realtime)"
                " SELECT s.webhook_id, e.seq, CASE WHEN e.realtime THEN $2::bigint END,"
                " e.realtime FROM events AS e"
                " JOIN webhook_events AS s ON s.event_name = e.event_name"
                " JOIN webhooks AS w ON w.id = s.webhook_id AND w.status = 'active'"
                " WHERE e.seq = ANY($1::bigint[])"
                # A webhook being deleted now is waited for, then skipped, instead of
                # failing the ingest on its foreign key.
                " FOR KEY SHARE OF w",
                seqs,
                now_ms,
            )

        await self._write(work)
        if fresh and self._on_events_committed is not None:
            self._on_events_committed()
        return AppendResult(
            accepted=len(fresh),
            duplicates=len(events) - len(fresh),
            accepted_names=tuple(event.event_name for event in fresh),
        )

    async def get_event(self, event_id: str) -> StoredEvent | None:
        rows = await self._fetch(
            "SELECT e.seq, e.event_id, e.event_name, e.account_id, e.timestamp_ms,"
            " e.realtime, e.ingested_at_ms, e.body, coalesce((SELECT json_agg(json_build_array("
            " d.webhook_id, d.state, d.attempts, d.batch_id, d.delivered_at_ms)"
            " ORDER BY d.webhook_id) FROM delivery_states AS d WHERE d.event_seq = e.seq),"
            " '[]')::text FROM events AS e WHERE e.event_id = $1",
            event_id,
        )
        if not rows:
            return None
        return stored_event(rows[0])

    async def count_events(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM events")
        return int(rows[0][0])

"""The event log: storing events (with their fan-out) and reading them back.

**Group commit.** The appends waiting in this process are committed together, in one
transaction and one WAL flush, up to :data:`MAX_GROUP_EVENTS` events, in the order they
were made; each call is answered with its own result once the group is committed. One
transaction per request would bound ingest by the server's commit rate (about 2,800 a
second on this machine's disk, ``bench/pg_driver.py``).

**Ingest order across processes.** Each ingest transaction takes one
transaction-scoped advisory lock before it numbers its events and keeps it until it
commits: ``seq`` values become visible in increasing order, so a delivery worker that
read up to ``seq`` n never later finds a smaller one committed. A sequence alone would
not do: two transactions that drew 10 and 11 may commit 11 first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final, NamedTuple

import asyncpg

from almhookd.domain.events import NewEvent
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.notices import announce
from almhookd.storage.rows import stored_event
from almhookd.storage.values import AppendResult, Notice, StoredEvent

#: ``pg_advisory_xact_lock`` key held by each ingest transaction while it numbers its
#: events: "ingest" in ASCII.
INGEST_LOCK: Final = int.from_bytes(b"ingest", "big")

#: The most events one group commit takes (a request's events are never split).
MAX_GROUP_EVENTS: Final = 20_000


class _Pending(NamedTuple):
    events: Sequence[NewEvent]
    done: asyncio.Future[AppendResult]


async def _store_group(
    connection: asyncpg.Connection, group: Sequence[_Pending], now_ms: int, origin: str
) -> list[AppendResult]:
    """The group's transaction body: its new events numbered and stored, fanned out to
    the active webhooks subscribed to them, the other processes' workers woken when it
    commits; one result per request, in order."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", INGEST_LOCK)
    known = {
        row[0]
        for row in await connection.fetch(
            "SELECT event_id FROM events WHERE event_id = ANY($1::text[])",
            [event.event_id for pending in group for event in pending.events],
        )
    }
    fresh: list[NewEvent] = []
    results = []
    for pending in group:
        names = []
        for event in pending.events:
            if event.event_id not in known:
                known.add(event.event_id)
                fresh.append(event)
                names.append(event.event_name)
        results.append(
            AppendResult(
                accepted=len(names),
                duplicates=len(pending.events) - len(names),
                accepted_names=tuple(names),
            )
        )
    if not fresh:
        return results
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
    # Real-time deliveries are due now; batch ones are held (due NULL) for the batch
    # flush.
    await connection.execute(
        "INSERT INTO deliveries (webhook_id, event_seq, due_at_ms, realtime)"
        " SELECT s.webhook_id, e.seq, CASE WHEN e.realtime THEN $2::bigint END,"
        " e.realtime FROM events AS e"
        " JOIN webhook_events AS s ON s.event_name = e.event_name"
        " JOIN webhooks AS w ON w.id = s.webhook_id AND w.status = 'active'"
        " WHERE e.seq = ANY($1::bigint[])"
        # A webhook being deleted now is waited for, then skipped, instead of failing
        # the ingest on its foreign key.
        " FOR KEY SHARE OF w",
        seqs,
        now_ms,
    )
    await announce(connection, Notice(kind="events", origin=origin))
    return results


class EventOps(PostgresEngine):
    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store ``events`` durably (on disk: ``synchronous_commit = on``) and fan them out
        to the active webhooks subscribed to them, in one transaction with the other
        appends waiting now (see the module's docstring). Calls made in one process
        commit in the order they were made."""
        async with self._call():
            pending = _Pending(events, asyncio.get_running_loop().create_future())
            self._appends.append(pending)
            if self._drainer is None or self._drainer.done():
                # Created inside this call: the drain's steps count as part of it.
                self._drainer = asyncio.ensure_future(self._drain())
            # Shielded: a caller that gives up does not cancel its group's commit.
            return await asyncio.shield(pending.done)

    async def _drain(self) -> None:
        while self._appends:
            group: list[_Pending] = []
            size = 0
            while self._appends and (not group or size < MAX_GROUP_EVENTS):
                pending = self._appends.popleft()
                group.append(pending)
                size += len(pending.events)
            await self._commit_group(group)

    async def _commit_group(self, group: list[_Pending]) -> None:
        now_ms = self._now_ms()

        async def work(connection: asyncpg.Connection) -> list[AppendResult]:
            return await _store_group(connection, group, now_ms, self.process_id)

        try:
            results = await self._write(work)  # durable: acknowledged means on disk
        except Exception as error:  # every waiter must hear of it
            if len(group) > 1:
                # Perhaps one request's rows broke the transaction, not the database:
                # commit each request alone, so that only that one fails.
                for pending in group:
                    await self._commit_group([pending])
                return
            for pending in group:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        self.commits += 1
        if any(result.accepted for result in results) and self._on_events_committed:
            self._on_events_committed()
        for pending, result in zip(group, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

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

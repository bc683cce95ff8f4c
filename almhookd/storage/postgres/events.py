"""The event log: storing events (with their fan-out) and reading them back.

**Group commit.** The appends waiting in this process are committed together, in one
transaction and one WAL flush, up to :data:`MAX_GROUP_EVENTS` events, in the order they
were made; each call is answered with its own result once the group is committed. One
transaction per request would bound ingest by the server's commit rate (about 2,800 a
second on this machine's disk, ``bench/pg_driver.py``). The group is one call of the
server-side function ``almhookd_append`` (migration 3): one round trip, where the same
steps as separate statements took nine.

**Ingest order across processes.** Each ingest transaction takes one
transaction-scoped advisory lock (``INGEST_LOCK``) before it numbers its events and
keeps it until it commits: ``seq`` values become visible in increasing order, so a
delivery worker that read up to ``seq`` n never later finds a smaller one committed. A
sequence alone would not do: two transactions that drew 10 and 11 may commit 11 first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final, NamedTuple

from almhookd.domain.events import NewEvent
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.notices import payload_of
from almhookd.storage.rows import stored_event
from almhookd.storage.values import AppendResult, Notice, StoredEvent

#: The most events one group commit takes (a request's events are never split).
MAX_GROUP_EVENTS: Final = 20_000

#: One group's events stored, fanned out and announced, in its own transaction (the
#: statement's); returns the 1-based positions of those stored, the rest being
#: duplicates.
APPEND_SQL: Final = (
    "SELECT almhookd_append($1::text[], $2::text[], $3::bigint[], $4::bigint[],"
    " $5::boolean[], $6::text[], $7::bigint, $8::text)"
)


def append_arguments(events: Sequence[NewEvent], *, now_ms: int, notice: str) -> tuple[object, ...]:
    """APPEND_SQL's parameters: the events' columns, their ingest time, the notice."""
    return (
        [e.event_id for e in events],
        [e.event_name for e in events],
        [e.account_id for e in events],
        [e.timestamp_ms for e in events],
        [e.realtime for e in events],
        [e.body for e in events],
        now_ms,
        notice,
    )


class _Pending(NamedTuple):
    events: Sequence[NewEvent]
    done: asyncio.Future[AppendResult]


def _results(group: Sequence[_Pending], stored: set[int]) -> list[AppendResult]:
    """Each request's result, from the positions (1-based, over the whole group) of
    the events stored."""
    results = []
    position = 0
    for pending in group:
        names = []
        for event in pending.events:
            position += 1
            if position in stored:
                names.append(event.event_name)
        results.append(
            AppendResult(
                accepted=len(names),
                duplicates=len(pending.events) - len(names),
                accepted_names=tuple(names),
            )
        )
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
        arguments = append_arguments(
            [event for pending in group for event in pending.events],
            now_ms=self._now_ms(),
            notice=payload_of(Notice(kind="events", origin=self.process_id)),
        )
        try:
            # Durable: the function commits with synchronous_commit on.
            rows = await self._fetch(APPEND_SQL, *arguments)
            results = _results(group, set(rows[0][0]))
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

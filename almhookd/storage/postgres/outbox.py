"""The delivery worker's outbox: claiming request batches and recording attempts."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import asyncpg

from almhookd.domain.batching import Claim, EventColumns, RequestBatch, pack, request_batch
from almhookd.domain.ownership import Lease
from almhookd.domain.policy import Schedule
from almhookd.storage.interface import Outbox
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.leases import check_lease, lease_lost
from almhookd.storage.postgres.queries import REWIND_SQL
from almhookd.storage.rows import to_ms
from almhookd.storage.values import RESPONSE_EXCERPT_CHARS, Attempt

T = TypeVar("T")

#: A webhook's claim cursor, locked until the claim's transaction ends, and whether
#: the process still holds the webhook's lease (parameters: webhook id, process id and
#: fence, or NULLs: none to check), checked before the cursor is locked, in the same
#: round trip (``check_lease``).
CURSOR_SQL: Final = (
    "SELECT after_seq, rewound_from,"
    " $2::text IS NULL OR almhookd_holds_lease($1, $2::text, $3::bigint)"
    " FROM claim_cursors WHERE webhook_id = $1 FOR UPDATE"
)
#: ... made at its first claim (none if the webhook is gone).
NEW_CURSOR_SQL: Final = (
    "INSERT INTO claim_cursors (webhook_id) SELECT id FROM webhooks WHERE id = $1"
    " ON CONFLICT (webhook_id) DO NOTHING"
)

#: The last event of the batches being sent (0: none).
SENDING_HIGH_SQL: Final = (
    "SELECT coalesce(max(event_seqs[cardinality(event_seqs)]), 0) FROM request_batches"
    " WHERE webhook_id = $1 AND state = 'sending'"
)

#: The next released deliveries after a given event, each with whether it is due yet
#: (parameters: webhook id, now, retained since, after seq, limit). Those not due yet
#: are read too, so that the cursor does not move past them.
CLAIM_SQL: Final = (
    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body, e.realtime,"
    " d.due_at_ms <= $2"
    " FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
    " WHERE d.webhook_id = $1 AND d.state = 'pending' AND d.due_at_ms IS NOT NULL"
    " AND e.ingested_at_ms >= $3 AND d.event_seq > $4"
    " ORDER BY d.event_seq LIMIT $5"
)

#: The same, skipping those in batches being sent: for when some below the cursor are
#: due again (a replay, the flush, a dissolved batch, a new owner).
CLAIM_AROUND_SENDING_SQL: Final = CLAIM_SQL.replace(
    " ORDER BY",
    " AND d.event_seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = $1) ORDER BY",
)

#: The webhook's claim cursor moved (parameters: webhook id, after seq, rewound from).
MOVE_CURSOR_SQL: Final = (
    "INSERT INTO claim_cursors (webhook_id, after_seq, rewound_from) VALUES ($1, $2, $3)"
    " ON CONFLICT (webhook_id) DO UPDATE"
    " SET after_seq = excluded.after_seq, rewound_from = excluded.rewound_from"
)

#: The claimed batches recorded as being sent, in claim order, and the cursor moved, in
#: one statement (parameters: webhook id, after seq, rewound from, then ids, now,
#: every batch's seqs one after the other, and the cumulative count at each batch's
#: end). One INSERT a batch cost the server 37-44 us each at one event per request.
BATCHES_SQL: Final = (
    "WITH batches AS (INSERT INTO request_batches"  # noqa: S608 - a constant
    " (id, webhook_id, created_at_ms, state, event_seqs)"
    " SELECT b.id, $1, $5, 'sending', ($6::bigint[])[coalesce(b.before, 0) + 1 : b.upto]"
    " FROM (SELECT id, upto, lag(upto) OVER (ORDER BY position) AS before, position"
    " FROM unnest($4::text[], $7::integer[]) WITH ORDINALITY AS u (id, upto, position))"
    f" AS b ORDER BY b.position) {MOVE_CURSOR_SQL}"
)


#: The lease a worker's steps are fenced by: this process's id and the lease it holds.
Fence = tuple[str, Lease]


async def claim_due(
    connection: asyncpg.Connection,
    webhook_id: str,
    claim: Claim,
    fence: Fence | None = None,
) -> list[RequestBatch]:
    """Up to ``claim.batches`` batches, in order, packed from one query and recorded as
    being sent by one statement (the SQLite backend's ``claim_due``, in PostgreSQL);
    with a ``fence``, :class:`~almhookd.errors.LeaseLost` unless this process still
    holds the webhook's lease.

    Where to read comes from the webhook's claim cursor (locked until the transaction
    ends): forward from the last seq ever claimed, or, after a rewind, from the rewound
    seq around the batches being sent. The SQLite backend counts the due deliveries
    below the batches being sent instead; here that count walked every delivery
    acknowledged since the last vacuum."""
    if claim.batches <= 0:
        return []
    owner, fence_number = (fence[0], fence[1].fence) if fence else (None, None)
    cursor = await connection.fetchrow(CURSOR_SQL, webhook_id, owner, fence_number)
    if cursor is None:
        # A first claim: the row is made, then locked like any other, so a rewind
        # committed meanwhile is not overwritten by this claim's cursor. The lease
        # first, as every fenced step takes it before the webhook's rows (a deletion
        # takes them in that order too).
        if fence is not None:
            await check_lease(connection, *fence)  # held, and locked to the commit
        await connection.execute(NEW_CURSOR_SQL, webhook_id)
        cursor = await connection.fetchrow(CURSOR_SQL, webhook_id, None, None)
    if cursor is not None and not cursor[2]:
        assert fence is not None  # without one the check is true
        raise lease_lost(fence[1])
    after_seq, rewound_from = (cursor[0], cursor[1]) if cursor else (0, None)
    if rewound_from is None:
        query, start = CLAIM_SQL, after_seq
    else:
        query, start = CLAIM_AROUND_SENDING_SQL, min(rewound_from - 1, after_seq)
    # Enough rows for real-time batches first; more only if released non-real-time
    # events (packed up to max_batch_events a request) run past them. Reading for the
    # larger size every time read 45 rows, with their bodies, for each one claimed at
    # one event per request.
    limit = claim.batches * claim.max_events
    records = list(
        await connection.fetch(
            query, webhook_id, claim.now_ms, claim.retained_since_ms, start, limit
        )
    )
    due = [tuple(record)[:6] for record in records if record[6]]
    packed_events, wanted_more = _packed(due, claim)
    most = claim.batches * max(claim.max_events, claim.max_batch_events)
    if wanted_more and len(records) == limit < most:
        more = await connection.fetch(
            query, webhook_id, claim.now_ms, claim.retained_since_ms, records[-1][0], most - limit
        )
        records += more
        limit = most
        due += [tuple(record)[:6] for record in more if record[6]]
        packed_events, _ = _packed(due, claim)
    batches = [
        request_batch("msg_" + uuid.uuid4().hex, webhook_id, events, created_at_ms=claim.now_ms)
        for events in packed_events
    ]
    moved_to = max(after_seq, batches[-1].event_seqs[-1] if batches else 0)
    if rewound_from is not None:
        # Past the batches being sent too: a cursor made before they were (a new
        # schema, a copied install) must not lead a forward claim back into them.
        moved_to = max(moved_to, await connection.fetchval(SENDING_HIGH_SQL, webhook_id))
    # Below the new cursor, the next claim must look again from the first delivery
    # left: one not due yet, one read and not packed (packing takes a prefix of the due
    # ones, in seq order), or after a rewind, past the last row read when the query
    # was cut at its limit.
    packed = sum(len(batch.event_seqs) for batch in batches)
    left = [record[0] for record in records if not record[6]]
    if packed < len(due):
        left.append(due[packed][0])
    if rewound_from is not None and len(records) == limit:
        left.append(records[-1][0] + 1)
    still_rewound = min((seq for seq in left if seq <= moved_to), default=None)
    if batches:
        await connection.execute(
            BATCHES_SQL,
            webhook_id,
            moved_to,
            still_rewound,
            [batch.id for batch in batches],
            claim.now_ms,
            [seq for batch in batches for seq in batch.event_seqs],
            list(itertools.accumulate(len(batch.event_seqs) for batch in batches)),
        )
    elif (moved_to, still_rewound) != (after_seq, rewound_from):
        await connection.execute(MOVE_CURSOR_SQL, webhook_id, moved_to, still_rewound)
    return batches


def _packed(due: list[tuple[object, ...]], claim: Claim) -> tuple[list[EventColumns], bool]:
    """The events of the batches packed from these due rows, and whether packing asked
    for rows beyond them."""
    unread = list(due)
    wanted_more = False

    def fetch(count: int) -> list[tuple[object, ...]]:
        nonlocal wanted_more
        taken = unread[:count]
        del unread[:count]
        wanted_more = wanted_more or len(taken) < count
        return taken

    return list(pack(fetch, claim)), wanted_more  # type: ignore[arg-type]


#: A worker's attempts recorded, its acknowledged deliveries marked, its schedule (and
#: a disable) stored, by the server-side function of migrations 3 and 4; false, nothing
#: written, when the fence (owner and fence number, or NULLs: none) does not hold.
RECORD_SQL: Final = (
    "SELECT almhookd_record($1::text, $2::text, $3::bigint, $4::bigint, $5::text[],"
    " $6::bigint[], $7::bigint[], $8::integer[], $9::integer[], $10::text[], $11::text[],"
    " $12::boolean[], $13::bigint[], $14::integer[], $15::integer, $16::bigint,"
    " $17::bigint, $18::bigint, $19::text, $20::bigint, $21::text)"
)


class OutboxOps(PostgresEngine):
    """Claim and record, for the worker of each webhook; with a ``fence``, each step
    first checks, in its own transaction, that this process still holds the webhook's
    lease, and keeps it locked to the commit: the claim with its read of the cursor
    (``CURSOR_SQL``), the record inside ``almhookd_record``, the read of the batches in
    flight through :func:`~almhookd.storage.postgres.leases.check_lease`."""

    async def _outbox_write(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], fence: Fence | None
    ) -> T:
        if fence is None:
            return await self._write(work, durable=False)

        async def fenced(connection: asyncpg.Connection) -> T:
            await check_lease(connection, *fence)
            return await work(connection)

        return await self._write(fenced, durable=False)

    def fenced_outbox(self, process_id: str, lease: Lease) -> Outbox:
        """The outbox of ``lease``'s webhook for this process while it holds the lease:
        every claim and record raises :class:`~almhookd.errors.LeaseLost` once it does
        not, and changes nothing."""
        return FencedOutbox(self, (process_id, lease))

    async def in_flight_batches(
        self, webhook_id: str, *, fence: Fence | None = None
    ) -> list[RequestBatch]:
        """The batches recorded as being sent, oldest first (after a crash: to send
        again, same ids, before anything new is claimed)."""

        async def work(connection: asyncpg.Connection) -> list[RequestBatch]:
            # A worker starting (a new owner, a restart, a dissolved batch): its first
            # claim looks at every due delivery once, whatever the cursor says.
            await connection.execute(REWIND_SQL, webhook_id, 0)
            batches = []
            for batch_id, created_at_ms, attempts, seqs in await connection.fetch(
                "SELECT id, created_at_ms, attempts, event_seqs FROM request_batches"
                " WHERE webhook_id = $1 AND state = 'sending' ORDER BY claim_order",
                webhook_id,
            ):
                events = await connection.fetch(
                    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body"
                    " FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
                    " WHERE d.webhook_id = $1 AND d.event_seq = ANY($2::bigint[])"
                    " AND d.state = 'pending' ORDER BY d.event_seq",
                    webhook_id,
                    seqs,
                )
                if not events:
                    await connection.execute(
                        "UPDATE request_batches SET state = 'expired' WHERE id = $1", batch_id
                    )
                    continue
                batches.append(
                    request_batch(
                        batch_id,
                        webhook_id,
                        EventColumns(*zip(*[tuple(row) for row in events], strict=True)),
                        created_at_ms=created_at_ms,
                        attempts=attempts,
                    )
                )
            return batches

        return await self._outbox_write(work, fence)

    async def claim_batches(
        self, webhook_id: str, claim: Claim, *, fence: Fence | None = None
    ) -> list[RequestBatch]:
        async def work(connection: asyncpg.Connection) -> list[RequestBatch]:
            return await claim_due(connection, webhook_id, claim, fence)  # fenced inside

        return await self._write(work, durable=False)

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
        fence: Fence | None = None,
    ) -> list[RequestBatch]:
        """Log attempts, in order; mark acknowledged batches delivered; store the
        webhook's schedule after them; with ``claim_next``, claim the next batches in
        the same transaction."""
        now_ms = self._now_ms()
        owner, fence_number = (fence[0], fence[1].fence) if fence else (None, None)
        arguments = (
            webhook_id,
            owner,
            fence_number,
            now_ms,
            [a.batch.id for a in attempts],
            [a.started_at_ms for a in attempts],
            [a.outcome.duration_ms for a in attempts],
            [len(a.batch.event_seqs) for a in attempts],
            [a.outcome.status for a in attempts],
            [a.outcome.error for a in attempts],
            [a.outcome.response_body[:RESPONSE_EXCERPT_CHARS] for a in attempts],
            [a.outcome.ok for a in attempts],
            [seq for a in attempts for seq in a.batch.event_seqs],
            list(itertools.accumulate(len(a.batch.event_seqs) for a in attempts)),
            schedule.consecutive_failures,
            to_ms(schedule.failing_since),
            to_ms(schedule.next_attempt_at),
            to_ms(schedule.last_success_at),
            schedule.last_error,
            to_ms(schedule.last_reminder_at),
            disable_reason,
        )

        async def work(connection: asyncpg.Connection) -> list[RequestBatch]:
            held = await connection.fetchval(RECORD_SQL, *arguments)
            if not held and fence is not None:  # only a fenced record is refused
                raise lease_lost(fence[1])
            return await claim_due(connection, webhook_id, claim_next) if claim_next else []

        # Fenced inside the function, in the same transaction as the claim.
        return await self._outbox_write(work, None)

    async def backlog(self, webhook_id: str) -> int:
        """Deliveries of this webhook not yet delivered nor expired."""
        rows = await self._fetch(
            "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND state = 'pending'",
            webhook_id,
        )
        return int(rows[0][0])

    async def next_due_ms(self, webhook_id: str, *, after_ms: int) -> int | None:
        # From the claim cursor on: a delivery not due yet is above it or at its rewind
        # (claim_due), and what lies below is mostly acknowledged deliveries a vacuum
        # has not cleaned from the index yet.
        rows = await self._fetch(
            "SELECT min(d.due_at_ms) FROM deliveries AS d WHERE d.webhook_id = $1"
            " AND d.state = 'pending' AND d.due_at_ms IS NOT NULL AND d.due_at_ms > $2"
            " AND d.event_seq > coalesce((SELECT least(c.after_seq, c.rewound_from - 1)"
            " FROM claim_cursors AS c WHERE c.webhook_id = $1), 0)",
            webhook_id,
            after_ms,
        )
        return None if rows[0][0] is None else int(rows[0][0])


class FencedOutbox:
    """One webhook's :class:`~almhookd.storage.interface.Outbox` for the process holding
    its lease (:meth:`OutboxOps.fenced_outbox`)."""

    def __init__(self, store: OutboxOps, fence: Fence) -> None:
        self._store = store
        self._fence = fence

    async def in_flight_batches(self, webhook_id: str) -> list[RequestBatch]:
        return await self._store.in_flight_batches(webhook_id, fence=self._fence)

    async def claim_batches(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        return await self._store.claim_batches(webhook_id, claim, fence=self._fence)

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
    ) -> list[RequestBatch]:
        return await self._store.record_attempts(
            webhook_id,
            attempts,
            schedule=schedule,
            disable_reason=disable_reason,
            claim_next=claim_next,
            fence=self._fence,
        )

    async def backlog(self, webhook_id: str) -> int:
        return await self._store.backlog(webhook_id)

    async def next_due_ms(self, webhook_id: str, *, after_ms: int) -> int | None:
        return await self._store.next_due_ms(webhook_id, after_ms=after_ms)

"""The PostgreSQL engine on a real server (the session's throwaway cluster): migrations
once under concurrency, the password never shown, ingest order across processes, the
event log. Each test gets a new empty database; "processes" are separate engines, each
with its own connection pool, as separate daemons would have."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from almhookd.config import Secret
from almhookd.domain.batching import Claim
from almhookd.domain.policy import Outcome, Schedule
from almhookd.domain.webhooks import NewWebhook, Webhook
from almhookd.errors import LeaseLost, StorageClosed, StorageError
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.postgres.events import APPEND_SQL, append_arguments
from almhookd.storage.postgres.migrations import SCHEMA_VERSION
from almhookd.storage.postgres.queries import REWIND_SQL, SWEEP_LOCK_SQL
from almhookd.storage.postgres.webhooks import DELETE_WEBHOOK_SQL
from almhookd.storage.values import Attempt
from tests.support.clock import FakeClock
from tests.support.events import make_events
from tests.support.net import free_port
from tests.support.running import eventually
from tests.support.running import until as until_async

BOUND_SECONDS = 30.0


async def _open(dsn: str, clock: FakeClock | None = None, **options: object) -> PostgresStorage:
    return await PostgresStorage.open(Secret(dsn), clock=clock or FakeClock(), **options)  # type: ignore[arg-type]


async def _sql(dsn: str, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *arguments))
    finally:
        await connection.close()


#: One event a request, at a time past every event the tests store: all of them due.
CLAIM = Claim(
    now_ms=2_000_000_000_000,
    retained_since_ms=0,
    max_events=1,
    max_batch_events=1,
    max_bytes=1 << 20,
)


#: A webhook's held deliveries made due ($1), as the batch flush makes them.
RELEASE_HELD_SQL = "UPDATE deliveries SET due_at_ms = 0 WHERE webhook_id = $1 AND due_at_ms IS NULL"


async def _webhook(engine: PostgresStorage, name: str, *events: str) -> Webhook:
    return await engine.create_webhook(
        NewWebhook(
            name=name,
            target_url="https://example.invalid/",
            events=frozenset(events or {"COURSE_ENROLLMENT"}),
        )
    )


async def _waits_on_a_lock(dsn: str, task: asyncio.Future[Any], query: str = "%") -> bool:
    """Whether ``task``, not done, is waiting for a row or advisory lock of the test's
    database, in a statement like ``query``."""
    rows = await _sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database() AND query LIKE $1",
        query,
    )
    return bool(rows[0][0]) and not task.done()


async def test_processes_starting_together_migrate_once(postgres_dsn: str) -> None:
    with capture_logs() as logs:
        engines = await asyncio.wait_for(
            asyncio.gather(*(_open(postgres_dsn) for _ in range(4))), BOUND_SECONDS
        )
    try:
        rows = await _sql(postgres_dsn, "SELECT version FROM almhookd_schema ORDER BY version")
        assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))
        migrated = [entry for entry in logs if entry["event"] == "storage.migrated"]
        assert [entry["schema_version"] for entry in migrated] == list(range(1, SCHEMA_VERSION + 1))
        assert all(engine.schema_version == SCHEMA_VERSION for engine in engines)
    finally:
        for engine in engines:
            await engine.close()
    # Opened again: nothing left to migrate.
    with capture_logs() as logs:
        engine = await _open(postgres_dsn)
        await engine.close()
    assert not [entry for entry in logs if entry["event"] == "storage.migrated"]


async def test_a_newer_schema_is_refused(postgres_dsn: str) -> None:
    engine = await _open(postgres_dsn)
    await engine.close()
    await _sql(
        postgres_dsn, "INSERT INTO almhookd_schema (version) VALUES ($1)", SCHEMA_VERSION + 1
    )
    with pytest.raises(StorageError, match=r"schema version \d+ is newer .* upgrade almhookd"):
        await _open(postgres_dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://almhookd:{password}@127.0.0.1:{port}/almhookd",
        "postgresql://almhookd@127.0.0.1:{port}/almhookd?password={password}",
    ],
)
async def test_the_password_never_shows_in_an_error(dsn: str) -> None:
    password = "pg-pass-Zq8v3kx"
    secret = dsn.format(password=password, port=free_port())  # nothing listens there
    with pytest.raises(StorageError) as caught:
        await _open(secret)
    error = caught.value
    shown = "".join(traceback.format_exception(error))
    assert "cannot connect" in str(error) and "127.0.0.1" in str(error)
    assert password not in shown
    assert "***" in str(error)
    assert error.__cause__ is None and error.__suppress_context__


async def test_append_stores_dedupes_and_fans_out_to_active_subscribers(
    postgres_dsn: str,
) -> None:
    committed: list[int] = []
    clock = FakeClock()
    engine = await PostgresStorage.open(
        Secret(postgres_dsn), clock=clock, on_events_committed=lambda: committed.append(1)
    )
    try:
        # Webhooks are written by hand: the webhook part of the backend is not built yet.
        for webhook_id, status in (("wh-active", "active"), ("wh-off", "inactive")):
            await _sql(
                postgres_dsn,
                "INSERT INTO webhooks (id, name, target_url, status, created_at_ms,"
                " updated_at_ms) VALUES ($1, $1, 'https://example.invalid/', $2, 0, 0)",
                webhook_id,
                status,
            )
            for name in ("COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH"):
                await _sql(
                    postgres_dsn,
                    "INSERT INTO webhook_events (event_name, webhook_id) VALUES ($1, $2)",
                    name,
                    webhook_id,
                )
        realtime = make_events(2)
        held = make_events(1, name="COURSE_ENROLLMENT_BATCH")
        other = make_events(1, name="COURSE_COMPLETED")
        result = await engine.append([*realtime, realtime[0], *held, *other])
        assert (result.accepted, result.duplicates) == (4, 1)
        assert result.accepted_names == (
            "COURSE_ENROLLMENT",
            "COURSE_ENROLLMENT",
            "COURSE_ENROLLMENT_BATCH",
            "COURSE_COMPLETED",
        )
        assert committed == [1]
        again = await engine.append(realtime)
        assert (again.accepted, again.duplicates) == (0, 2)
        assert committed == [1]  # nothing new stored: no wake-up
        assert await engine.count_events() == 4

        stored = await engine.get_event(realtime[0].event_id)
        assert stored is not None
        assert stored.body["eventId"] == realtime[0].event_id and stored.realtime
        assert stored.ingested_at_ms == int(clock() * 1000)
        assert [(d.webhook_id, d.state) for d in stored.deliveries] == [("wh-active", "pending")]
        rows = await _sql(
            postgres_dsn,
            "SELECT e.event_name, d.due_at_ms IS NULL FROM deliveries AS d"
            " JOIN events AS e ON e.seq = d.event_seq ORDER BY d.event_seq",
        )
        assert [tuple(row) for row in rows] == [
            ("COURSE_ENROLLMENT", False),
            ("COURSE_ENROLLMENT", False),
            ("COURSE_ENROLLMENT_BATCH", True),  # held for the batch flush
        ]
        unsubscribed = await engine.get_event(other[0].event_id)
        assert unsubscribed is not None and unsubscribed.deliveries == ()
        assert await engine.get_event("no-such-event") is None
    finally:
        await engine.close()


async def test_events_become_visible_in_ingest_order_across_processes(
    postgres_dsn: str,
) -> None:
    """Three engines append concurrently while a reader polls: once the reader has seen
    ``seq`` n, no event with a smaller ``seq`` may appear later (a delivery worker that
    read up to n would skip it for ever)."""
    engines = [await _open(postgres_dsn) for _ in range(3)]
    observed: list[tuple[int, int]] = []  # (highest seq seen, rows at or below it)
    writing = True

    async def write(engine: PostgresStorage, prefix: str) -> None:
        for _ in range(40):
            await engine.append(make_events(3, prefix=prefix))

    async def read() -> None:
        connection = await asyncpg.connect(postgres_dsn)
        try:
            while writing:
                row = await connection.fetchrow(
                    "SELECT coalesce(max(seq), 0), count(*) FROM events"
                )
                observed.append((row[0], row[1]))  # the query's await lets the writers on
        finally:
            await connection.close()

    try:
        reader = asyncio.create_task(read())
        await asyncio.wait_for(
            asyncio.gather(*(write(e, f"p{n}") for n, e in enumerate(engines))), BOUND_SECONDS
        )
        writing = False
        await asyncio.wait_for(reader, BOUND_SECONDS)
        rows = await _sql(postgres_dsn, "SELECT seq FROM events ORDER BY seq")
        seqs = [row[0] for row in rows]
        assert seqs == list(range(1, 3 * 40 * 3 + 1))  # no gap, no reuse
        assert len(observed) > 10, "the reader saw too little to tell"
        for highest, count in observed:
            # Every row at or below what the reader saw was already there.
            assert count == highest, (highest, count)
    finally:
        for engine in engines:
            await engine.close()


async def test_a_closed_engine_refuses_and_closes_twice(postgres_dsn: str) -> None:
    engine = await _open(postgres_dsn)
    await engine.check()
    await engine.ping()
    await engine.close()
    await engine.close()
    with pytest.raises(StorageClosed):
        await engine.append(make_events(1))
    with pytest.raises(StorageClosed):
        await engine.check()


async def test_check_fails_when_the_server_takes_no_writes(postgres_dsn: str) -> None:
    """A server that reads but does not write (a standby after a failover, a database
    made read-only) fails ``check()``: reads alone would pass it."""
    await _sql(postgres_dsn, "SELECT 1")
    engine = await _open(postgres_dsn)
    await engine.check()
    await engine.close()
    name = postgres_dsn.rsplit("/", 1)[1]
    await _sql(postgres_dsn, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    engine = await _open(postgres_dsn)
    try:
        assert await engine.count_events() == 0  # it reads
        with pytest.raises(StorageError, match="read-only transaction"):
            await engine.check()
        with pytest.raises(StorageError):
            await engine.append(make_events(1))
    finally:
        await engine.close()


async def test_an_exclusive_opener_that_loses_its_hold_on_the_database_stops_using_it(
    postgres_dsn: str,
) -> None:
    first = await _open(postgres_dsn, exclusive=True)
    try:
        holder = first._holder
        assert holder is not None
        await _sql(postgres_dsn, "SELECT pg_terminate_backend($1)", holder.get_server_pid())
        await until_async(lambda: first._lock_lost, what="the lost hold noticed")
        # Another daemon may start now; the first refuses every call from then on.
        second = await _open(postgres_dsn, exclusive=True)
        await second.close()
        with pytest.raises(StorageError, match="lost its hold on the database"):
            await first.check()
        with pytest.raises(StorageError, match="lost its hold on the database"):
            await first.append(make_events(1))
    finally:
        await first.close()


async def test_ingest_waits_for_a_webhook_being_deleted_then_skips_it(postgres_dsn: str) -> None:
    engine = await _open(postgres_dsn)
    deleting = await asyncpg.connect(postgres_dsn)
    try:
        for webhook_id in ("wh-kept", "wh-deleted"):
            await _sql(
                postgres_dsn,
                "INSERT INTO webhooks (id, name, target_url, created_at_ms, updated_at_ms)"
                " VALUES ($1, $1, 'https://example.invalid/', 0, 0)",
                webhook_id,
            )
            await _sql(
                postgres_dsn,
                "INSERT INTO webhook_events (event_name, webhook_id)"
                " VALUES ('COURSE_ENROLLMENT', $1)",
                webhook_id,
            )
        transaction = deleting.transaction()
        await transaction.start()
        await deleting.execute("DELETE FROM webhooks WHERE id = 'wh-deleted'")
        events = make_events(1)
        appending = asyncio.ensure_future(engine.append(events))

        async def blocked() -> bool:
            rows = await _sql(
                postgres_dsn,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%almhookd_append%'",
            )
            return bool(rows[0][0])

        await eventually(blocked, what="the ingest waiting for the delete")
        await transaction.commit()
        result = await asyncio.wait_for(appending, BOUND_SECONDS)
        assert result.accepted == 1
        stored = await engine.get_event(events[0].event_id)
        assert stored is not None
        assert [d.webhook_id for d in stored.deliveries] == ["wh-kept"]
    finally:
        await deleting.close()
        await engine.close()


async def test_a_driver_error_never_carries_the_failing_row(postgres_dsn: str) -> None:
    """PostgreSQL's DETAIL of a constraint violation quotes the whole row, a webhook's
    password included: messages keep the primary message and the SQLSTATE only."""
    engine = await PostgresStorage.open(Secret(postgres_dsn), clock=FakeClock())
    password = "basic-Pw-not-shown-77"
    try:
        bad = NewWebhook(
            name="bad",
            target_url="https://example.invalid/",
            events=frozenset({"COURSE_ENROLLMENT"}),
            auth_type="digest",  # refused by the table's CHECK
            auth_username="u",
            auth_password=Secret(password),
        )
        with pytest.raises(StorageError, match="SQLSTATE 23514") as caught:
            await engine.create_webhook(bad)
        assert password not in "".join(traceback.format_exception(caught.value))
    finally:
        await engine.close()


async def test_the_space_probe_writes_and_leaves_nothing(postgres_dsn: str) -> None:
    engine = await _open(postgres_dsn)
    try:
        await engine.probe_space()
        rows = await _sql(postgres_dsn, "SELECT to_regclass('almhookd_space_probe') IS NULL")
        assert rows[0][0] is True
    finally:
        await engine.close()


async def test_concurrent_appends_commit_together_and_each_gets_its_own_result(
    postgres_dsn: str,
) -> None:
    engine = await PostgresStorage.open(Secret(postgres_dsn), clock=FakeClock())
    try:
        batches = [make_events(2) for _ in range(50)]
        results = await asyncio.gather(
            *(engine.append(batch) for batch in batches), engine.append(batches[0])
        )
        assert [(r.accepted, r.duplicates) for r in results] == [(2, 0)] * 50 + [(0, 2)]
        # The 51 calls were all waiting when the first group began: one commit, or two
        # at most, instead of 51 transactions each waiting for the disk.
        assert engine.commits <= 2
        assert await engine.count_events() == 100
    finally:
        await engine.close()


async def test_ingest_waits_for_the_disk_and_the_bookkeeping_does_not(postgres_dsn: str) -> None:
    """The pooled sessions commit without waiting for the disk; an ingest (the append
    function) and a durable write ask for it in their own transaction."""
    engine = await _open(postgres_dsn)
    try:

        async def setting(connection: asyncpg.Connection) -> str:
            return str(await connection.fetchval("SHOW synchronous_commit"))

        assert await engine._write(setting, durable=False) == "off"
        assert await engine._write(setting) == "on"

        async def jit(connection: asyncpg.Connection) -> str:
            return str(await connection.fetchval("SHOW jit"))

        assert await engine._write(jit) == "off"  # short statements: never compiled
        events = make_events(1)

        async def appending(connection: asyncpg.Connection) -> str:
            arguments = append_arguments(events, now_ms=0, notice="e:p_test")
            stored = await connection.fetchval(APPEND_SQL, *arguments)
            assert stored == [1]
            return await setting(connection)

        assert await engine._write(appending, durable=False) == "on"
    finally:
        await engine.close()


async def test_a_claim_cursor_made_after_batches_were_sent_never_claims_them_again(
    postgres_dsn: str,
) -> None:
    """A database whose batches were claimed before it had claim cursors (an upgrade to
    schema 3, an install copied by migrate-store): the worker's start rewinds, and no
    claim after that takes the batches being sent once more."""
    engine = await _open(postgres_dsn)
    try:
        webhook = await _webhook(engine, "upgraded")
        await engine.append(make_events(2))
        claim = replace(CLAIM, batches=2)
        sent = await engine.claim_batches(webhook.id, claim)
        await _sql(postgres_dsn, "DELETE FROM claim_cursors")  # as before schema 3
        assert [b.id for b in await engine.in_flight_batches(webhook.id)] == [b.id for b in sent]
        acknowledged = Attempt(
            batch=sent[0], outcome=Outcome(ok=True, status=200, duration_ms=1), started_at_ms=0
        )
        assert (
            await engine.record_attempts(
                webhook.id, [acknowledged], schedule=Schedule(), claim_next=claim
            )
            == []
        )
        assert await engine.claim_batches(webhook.id, claim) == []  # not the one being sent
        fresh = make_events(1)
        await engine.append(fresh)
        [after] = await engine.claim_batches(webhook.id, claim)
        assert list(after.event_ids) == [fresh[0].event_id]
    finally:
        await engine.close()


async def test_a_first_claim_keeps_a_rewind_committed_while_it_waited(postgres_dsn: str) -> None:
    """A webhook's first claim (no cursor row yet) racing a release that rewinds it: the
    claim waits for the release's row, then reads the rewind. Writing its own cursor
    over it instead left the released delivery below the cursor, never claimed."""
    engine = await _open(postgres_dsn)
    releasing = await asyncpg.connect(postgres_dsn)
    try:
        webhook = await _webhook(engine, "raced", "COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH")
        [held] = make_events(1, name="COURSE_ENROLLMENT_BATCH")  # seq 1, held
        [due] = make_events(1)  # seq 2, due at once
        await engine.append([held])
        await engine.append([due])
        claim = replace(CLAIM, batches=2)
        # A release as the batch flush makes one, left uncommitted.
        transaction = releasing.transaction()
        await transaction.start()
        await releasing.execute(RELEASE_HELD_SQL, webhook.id)
        await releasing.execute(REWIND_SQL, webhook.id, 1)
        claiming = asyncio.ensure_future(engine.claim_batches(webhook.id, claim))

        await eventually(
            lambda: _waits_on_a_lock(postgres_dsn, claiming, "%claim_cursors%"),
            what="the claim waiting on the cursor row",
        )
        await transaction.commit()
        first = await asyncio.wait_for(claiming, BOUND_SECONDS)
        second = await engine.claim_batches(webhook.id, claim)
        claimed = [event_id for batch in [*first, *second] for event_id in batch.event_ids]
        assert sorted(claimed) == sorted([held.event_id, due.event_id])
    finally:
        await releasing.close()
        await engine.close()


@pytest.mark.parametrize("writer", ["record", "claim", "replay"])
async def test_a_writer_racing_a_webhook_deletion_leaves_none_of_its_rows(
    postgres_dsn: str, writer: str
) -> None:
    """The hot tables have no foreign key to webhooks (migration 4), a trigger deletes
    their rows with the webhook's: each writer locks the webhook's row, or a row that
    cascades from it, so a deletion under way is waited for and what the writer does
    after it writes nothing."""
    engine = await _open(postgres_dsn)
    deleting = await asyncpg.connect(postgres_dsn)
    try:
        webhook = await _webhook(engine, "deleted")
        events = make_events(2)
        await engine.append(events[:1])
        claim = CLAIM
        [sent] = await engine.claim_batches(webhook.id, claim)
        await engine.append(events[1:])  # one more to claim
        transaction = deleting.transaction()
        await transaction.start()
        lock, *deletes = DELETE_WEBHOOK_SQL
        await deleting.execute(lock)
        for statement in deletes:  # the lease, the webhook's row and by trigger the rest
            await deleting.execute(statement, webhook.id)
        acknowledged = Attempt(
            batch=sent, outcome=Outcome(ok=True, status=200, duration_ms=1), started_at_ms=0
        )
        writing: Coroutine[Any, Any, object]
        if writer == "record":
            writing = engine.record_attempts(
                webhook.id, [acknowledged], schedule=Schedule(), claim_next=claim
            )
        elif writer == "claim":
            writing = engine.claim_batches(webhook.id, claim)
        else:
            writing = engine.replay(
                webhook.id,
                event_ids=[event.event_id for event in events],
                retained_since_ms=0,
                now_ms=claim.now_ms,
            )
        running = asyncio.ensure_future(writing)

        await eventually(
            lambda: _waits_on_a_lock(postgres_dsn, running),
            what=f"the {writer} waiting for the deletion",
        )
        await transaction.commit()
        assert not await asyncio.wait_for(running, BOUND_SECONDS)  # nothing claimed, queued
        for table in ("deliveries", "request_batches", "attempts"):
            rows = await _sql(
                postgres_dsn,
                f"SELECT count(*) FROM {table} WHERE webhook_id = $1",  # noqa: S608 - names
                webhook.id,
            )
            assert (table, rows[0][0]) == (table, 0)
    finally:
        await deleting.close()
        await engine.close()


async def test_a_deletion_waits_for_a_fenced_step_under_way_without_a_deadlock(
    postgres_dsn: str,
) -> None:
    """A fenced step holds the lease (FOR SHARE) before it writes the webhook's row; the
    deletion takes the lease first, so it waits for the step instead of holding the
    webhook's row the step is about to write."""
    engine = await _open(postgres_dsn)
    stepping = await asyncpg.connect(postgres_dsn)
    try:
        webhook = await _webhook(engine, "fenced")
        lease = await engine.acquire("p0", webhook.id, lease_ms=600_000)
        assert lease is not None
        transaction = stepping.transaction()
        await transaction.start()
        assert await stepping.fetchval(
            "SELECT almhookd_holds_lease($1, $2, $3)", webhook.id, "p0", lease.fence
        )
        deleting = asyncio.ensure_future(engine.delete_webhook(webhook.id))

        await eventually(
            lambda: _waits_on_a_lock(postgres_dsn, deleting, "DELETE FROM%"),
            what="the deletion waiting for the fenced step",
        )
        # The step's next write, as almhookd_record's first: no deadlock.
        await asyncio.wait_for(
            stepping.execute(
                "UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1", webhook.id
            ),
            BOUND_SECONDS,
        )
        await transaction.commit()
        assert await asyncio.wait_for(deleting, BOUND_SECONDS)
        assert await engine.get_webhook(webhook.id) is None
    finally:
        await stepping.close()
        await engine.close()


async def test_a_deletion_waits_for_a_batch_flush_under_way_without_a_deadlock(
    postgres_dsn: str,
) -> None:
    """The flush locks held deliveries, then their webhooks' claim cursors (its rewind);
    a deletion locks the cursor (a cascade), then the deliveries (the trigger): the
    deletion waits for the flush's lock first."""
    engine = await _open(postgres_dsn)
    flushing = await asyncpg.connect(postgres_dsn)
    try:
        webhook = await _webhook(engine, "flushed", "COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH")
        await engine.append(make_events(1, name="COURSE_ENROLLMENT_BATCH"))
        await engine.claim_batches(webhook.id, CLAIM)  # the webhook's cursor row exists
        transaction = flushing.transaction()
        await transaction.start()
        await flushing.execute(SWEEP_LOCK_SQL)
        await flushing.execute(RELEASE_HELD_SQL, webhook.id)
        deleting = asyncio.ensure_future(engine.delete_webhook(webhook.id))

        await eventually(
            lambda: _waits_on_a_lock(postgres_dsn, deleting),
            what="the deletion waiting for the flush",
        )
        # The flush's rewind, as release_held makes it: no deadlock.
        await asyncio.wait_for(flushing.execute(REWIND_SQL, webhook.id, 1), BOUND_SECONDS)
        await transaction.commit()
        assert await asyncio.wait_for(deleting, BOUND_SECONDS)
        rows = await _sql(
            postgres_dsn, "SELECT count(*) FROM deliveries WHERE webhook_id = $1", webhook.id
        )
        assert rows[0][0] == 0
    finally:
        await flushing.close()
        await engine.close()


async def test_a_fenced_claim_waits_on_the_lease_of_a_deletion_under_way_then_is_refused(
    postgres_dsn: str,
) -> None:
    """A fenced claim checks its lease before it locks its cursor (one statement): a
    deletion holding the lease is waited for there, so its cascade to the cursor finds
    the cursor free and the claim is refused once the deletion commits. Locking the
    cursor first would deadlock."""
    engine = await _open(postgres_dsn)
    deleting = await asyncpg.connect(postgres_dsn)
    try:
        webhook = await _webhook(engine, "claimed")
        lease = await engine.acquire("p0", webhook.id, lease_ms=600_000)
        assert lease is not None
        outbox = engine.fenced_outbox("p0", lease)
        await engine.append(make_events(2))
        await outbox.claim_batches(webhook.id, CLAIM)  # the cursor row exists
        transaction = deleting.transaction()
        await transaction.start()
        lock, lease_row, webhook_row = DELETE_WEBHOOK_SQL
        await deleting.execute(lock)
        await deleting.execute(lease_row, webhook.id)
        claiming = asyncio.ensure_future(outbox.claim_batches(webhook.id, CLAIM))
        await eventually(
            lambda: _waits_on_a_lock(postgres_dsn, claiming),
            what="the claim waiting on the deletion",
        )
        await asyncio.wait_for(deleting.execute(webhook_row, webhook.id), BOUND_SECONDS)
        await transaction.commit()
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(claiming, BOUND_SECONDS)
    finally:
        await deleting.close()
        await engine.close()

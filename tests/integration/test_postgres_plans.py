"""The hot server-side functions (migrations 3 and 4) stay index probes whatever the plan cache
holds: a plan made while the tables were small, or never analyzed (a new install, until
autovacuum's first round), and kept for the session, scanned a whole table at each call
under ``bench.delivery`` (all of a webhook's deliveries for each acknowledged event).
Each test reads the table counters of its own transaction (``pg_stat_xact_user_tables``).
"""

from __future__ import annotations

import asyncpg

from almhookd.config import Secret
from almhookd.domain.events import NewEvent
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.postgres.events import APPEND_SQL, append_arguments
from almhookd.storage.postgres.outbox import RECORD_SQL
from tests.support.clock import FakeClock
from tests.support.events import make_events

#: Events stored before the calls: a table this size scanned once per call shows.
STORED = 6_000
#: Calls measured.
CALLS = 12
#: Events per append, batches per record: as under load.
PER_CALL = 16


async def _planned_small_then_grown(dsn: str) -> asyncpg.Connection:
    """A connection whose functions were planned while the tables held PER_CALL events
    (generic plans: as the plan cache may settle on after five calls, as it did under
    ``bench.delivery``), the tables then grown to STORED events with no ANALYZE
    (autovacuum kept off them) by another connection."""
    store = await PostgresStorage.open(Secret(dsn), clock=FakeClock())
    try:
        async with store._connection() as connection:
            await connection.execute(
                "INSERT INTO webhooks (id, name, target_url, created_at_ms, updated_at_ms)"
                " VALUES ('wh', 'wh', 'https://example.invalid/', 0, 0);"
                " INSERT INTO webhook_events VALUES ('COURSE_ENROLLMENT', 'wh');"
                " ALTER TABLE events SET (autovacuum_enabled = false);"
                " ALTER TABLE deliveries SET (autovacuum_enabled = false)"
            )
        planned = await asyncpg.connect(dsn)
        await planned.execute("SET plan_cache_mode = force_generic_plan")
        assert await _append(planned, make_events(PER_CALL)) == list(range(1, PER_CALL + 1))
        assert await _record(planned, "planned", list(range(1, PER_CALL + 1)), [])
        for _ in range(STORED // 1_000):
            result = await store.append(make_events(1_000))
            assert result.accepted == 1_000
        async with store._connection() as connection:
            await connection.execute("ALTER TABLE request_batches SET (autovacuum_enabled = false)")
            await connection.execute(
                "INSERT INTO request_batches (id, webhook_id, created_at_ms, event_seqs)"
                " SELECT 'msg_stored_' || n, 'wh', 0, ARRAY[n] FROM generate_series(1, $1) AS n",
                STORED,
            )
    finally:
        await store.close()
    return planned


async def _append(connection: asyncpg.Connection, events: list[NewEvent]) -> list[int]:
    arguments = append_arguments(events, now_ms=0, notice="e:p_test")
    return list(await connection.fetchval(APPEND_SQL, *arguments))


async def _record(
    connection: asyncpg.Connection, name: str, marked: list[int], failed: list[int]
) -> bool:
    """Record one acknowledged single-event batch per seq of ``marked`` (as at one event
    per request), then one failed batch of ``failed``."""
    ids = [f"msg_{name}_{seq}" for seq in marked] + ([f"msg_{name}_failed"] if failed else [])
    ok = [True] * len(marked) + ([False] if failed else [])
    held = await connection.fetchval(
        RECORD_SQL,
        "wh",
        None,
        None,
        0,
        ids,
        [0] * len(ids),
        [1] * len(ids),
        [1] * len(marked) + ([len(failed)] if failed else []),
        [200 if good else 500 for good in ok],
        [None] * len(ids),
        [""] * len(ids),
        ok,
        marked + failed,
        [*range(1, len(marked) + 1)] + ([len(marked) + len(failed)] if failed else []),
        0,
        None,
        None,
        0,
        None,
        None,
        None,
    )
    return bool(held)


async def _scanned(connection: asyncpg.Connection, table: str) -> tuple[int, int]:
    """Rows this transaction read from ``table`` by sequential scans, and by index."""
    row = await connection.fetchrow(
        "SELECT coalesce(seq_tup_read, 0), coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relname = $1",
        table,
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def test_an_append_probes_the_event_index_whatever_the_statistics(
    postgres_dsn: str,
) -> None:
    connection = await _planned_small_then_grown(postgres_dsn)
    try:
        async with connection.transaction():
            for _ in range(CALLS):
                stored = await _append(connection, make_events(PER_CALL))
                assert stored == list(range(1, PER_CALL + 1))
            events_read = await _scanned(connection, "events")
            deliveries_read = await _scanned(connection, "deliveries")
    finally:
        await connection.close()
    # Per event: the duplicate check, and the new event read back for its fan-out;
    # never the STORED events.
    assert events_read[0] == 0, events_read
    assert events_read[1] <= 3 * CALLS * PER_CALL, events_read
    assert deliveries_read[0] == 0, deliveries_read
    assert deliveries_read[1] <= CALLS * PER_CALL, deliveries_read


async def test_a_record_probes_the_deliveries_by_key_whatever_the_statistics(
    postgres_dsn: str,
) -> None:
    connection = await _planned_small_then_grown(postgres_dsn)
    seqs = iter(range(PER_CALL + 1, PER_CALL + STORED + 1))
    # (acknowledged, failed) seqs of each call
    calls = [
        ([next(seqs) for _ in range(PER_CALL)], [next(seqs) for _ in range(PER_CALL)])
        for _ in range(CALLS)
    ]
    await connection.execute(
        "INSERT INTO request_batches (id, webhook_id, created_at_ms, event_seqs)"
        " SELECT id, 'wh', 0, '{}' FROM unnest($1::text[]) AS id",
        [f"msg_{call}_{seq}" for call, (marked, _) in enumerate(calls) for seq in marked]
        + [f"msg_{call}_failed" for call in range(CALLS)],
    )
    try:
        async with connection.transaction():
            for call, (marked, failed) in enumerate(calls):
                assert await _record(connection, str(call), marked, failed)
            deliveries_read = await _scanned(connection, "deliveries")
            batches_read = await _scanned(connection, "request_batches")
            batch_states = dict(
                await connection.fetch(
                    "SELECT state || ':' || attempts, count(*) FROM request_batches"
                    " WHERE id NOT LIKE 'msg_stored_%' GROUP BY 1"
                )
            )
            states = dict(
                await connection.fetch(
                    "SELECT state || ':' || attempts, count(*) FROM deliveries GROUP BY 1"
                )
            )
    finally:
        await connection.close()
    assert states == {
        "delivered:1": (CALLS + 1) * PER_CALL,
        "pending:1": CALLS * PER_CALL,
        "pending:0": STORED - 2 * CALLS * PER_CALL,
    }
    assert batch_states == {"delivered:1": CALLS * PER_CALL, "sending:1": CALLS}
    # Each record probes its rows: no scan, nor a range wider than its batches.
    assert deliveries_read[0] == 0, deliveries_read
    assert deliveries_read[1] <= 3 * 2 * CALLS * PER_CALL, deliveries_read
    assert batches_read[0] == 0, batches_read
    assert batches_read[1] <= 2 * CALLS * (PER_CALL + 1), batches_read


async def test_the_functions_never_compile_their_statements(postgres_dsn: str) -> None:
    """With scans disabled, a statement left with only a disabled path is costed at
    10^10, past ``jit_above_cost``: JIT compiling took 46-90 ms at each append. Each
    function carries ``jit = off`` with its planner settings."""
    await _planned_small_then_grown(postgres_dsn)
    connection = await asyncpg.connect(postgres_dsn)
    try:
        settings = dict(
            await connection.fetch(
                "SELECT proname, proconfig FROM pg_proc"
                " WHERE proname IN ('almhookd_append', 'almhookd_record')"
            )
        )
    finally:
        await connection.close()
    assert set(settings) == {"almhookd_append", "almhookd_record"}
    assert all("jit=off" in config for config in settings.values()), settings

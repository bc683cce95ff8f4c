"""Webhook leases on a real PostgreSQL server: at most one holder at a time, a new fence
at each takeover, a lost lease refused inside the loser's own transaction, no renewal
of an expired lease. "Processes" are separate storage objects with their own pools.

Leases run on the server's clock (processes on several machines must agree on when a
lease ends), so a test that needs one to expire gives it a few milliseconds and waits
for the takeover to succeed, bounded, never for a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from almhookd.config import Secret
from almhookd.domain.batching import Claim
from almhookd.domain.policy import Outcome, Schedule
from almhookd.domain.webhooks import NewWebhook
from almhookd.errors import LeaseLost
from almhookd.storage.postgres import Lease, PostgresStorage
from almhookd.storage.postgres.leases import check_lease
from almhookd.storage.postgres.migrations import SERVER_NOW_SQL as SERVER_NOW
from almhookd.storage.values import Attempt
from tests.support.clock import FakeClock
from tests.support.events import make_events
from tests.support.running import eventually

LONG_MS = 60_000  #: a lease that outlives the test
SHORT_MS = 5  #: a lease that runs out at once


async def _open(dsn: str) -> PostgresStorage:
    return await PostgresStorage.open(Secret(dsn), clock=FakeClock())


@pytest.fixture
async def processes(postgres_dsn: str) -> AsyncIterator[list[PostgresStorage]]:
    opened = [await _open(postgres_dsn) for _ in range(3)]
    for number, storage in enumerate(opened):
        await storage.join(f"p{number}", host="test", pid=number)
    yield opened
    for storage in opened:
        await storage.close()


async def _webhook(storage: PostgresStorage, name: str = "lms") -> str:
    created = await storage.create_webhook(
        NewWebhook(name=name, target_url="https://example.invalid/", events=frozenset({"X"}))
    )
    return created.id


async def test_a_held_lease_is_not_taken_and_an_expired_one_is_taken_with_a_new_fence(
    processes: list[PostgresStorage],
) -> None:
    a, b, _ = processes
    webhook = await _webhook(a)
    first = await a.acquire("p0", webhook, lease_ms=SHORT_MS)
    assert first is not None and first.fence == 1
    taken: list[Lease] = []

    async def b_takes_over() -> bool:
        lease = await b.acquire("p1", webhook, lease_ms=LONG_MS)
        if lease is not None:
            taken.append(lease)
        return lease is not None

    await eventually(b_takes_over, what="the takeover of an expired lease")
    assert taken[0].fence == 2
    # B's lease is in force: nobody else gets it, A included.
    assert await a.acquire("p0", webhook, lease_ms=LONG_MS) is None
    assert await processes[2].acquire("p2", webhook, lease_ms=LONG_MS) is None
    # A's old lease is refused inside A's own transaction; B's holds.
    assert not await a.holds("p0", first)
    assert await b.holds("p1", taken[0])
    with pytest.raises(LeaseLost, match=rf"{webhook}: this process's lease \(fence 1\)"):
        async with a._connection() as connection, connection.transaction():
            await check_lease(connection, "p0", first)


async def test_processes_racing_for_a_free_lease_get_exactly_one_holder(
    postgres_dsn: str,
) -> None:
    racers = [await _open(postgres_dsn) for _ in range(6)]
    try:
        webhook = await _webhook(racers[0])
        won = await asyncio.gather(
            *(s.acquire(f"r{n}", webhook, lease_ms=LONG_MS) for n, s in enumerate(racers))
        )
        assert len([lease for lease in won if lease is not None]) == 1
    finally:
        for storage in racers:
            await storage.close()


async def test_a_heartbeat_renews_held_leases_lists_the_live_and_drops_the_expired(
    processes: list[PostgresStorage],
) -> None:
    a, b, _ = processes
    kept, lapsing = await _webhook(a, "kept"), await _webhook(a, "lapsing")
    held = await a.acquire("p0", kept, lease_ms=LONG_MS)
    short = await a.acquire("p0", lapsing, lease_ms=SHORT_MS)
    assert held is not None and short is not None

    async def lapsed() -> bool:
        return not await a.holds("p0", short)

    await eventually(lapsed, what="the short lease's end")
    membership = await a.heartbeat("p0", lease_ms=LONG_MS, dead_after_ms=LONG_MS)
    assert membership.live == ("p0", "p1", "p2")
    # The expired lease is not renewed: another process may have it already.
    assert [(lease.webhook_id, lease.fence) for lease in membership.held] == [(kept, 1)]
    assert membership.held[0].expires_at_ms == membership.now_ms + LONG_MS
    assert await b.acquire("p1", lapsing, lease_ms=LONG_MS) is not None


async def test_a_process_not_heard_from_is_no_longer_live(
    processes: list[PostgresStorage],
) -> None:
    a, _, _ = processes
    # Only a's heartbeat is recent once some milliseconds have passed since the others'.
    seen: list[tuple[str, ...]] = []

    async def only_a() -> bool:
        membership = await a.heartbeat("p0", lease_ms=LONG_MS, dead_after_ms=2)
        seen.append(membership.live)
        return membership.live == ("p0",)

    await eventually(only_a, what="p1 and p2 no longer live")
    assert seen[-1] == ("p0",)


async def test_a_released_lease_is_taken_at_once_and_a_deleted_webhook_has_none(
    processes: list[PostgresStorage],
) -> None:
    a, b, _ = processes
    webhook = await _webhook(a)
    lease = await a.acquire("p0", webhook, lease_ms=LONG_MS)
    assert lease is not None
    await a.release("p0", lease)
    again = await b.acquire("p1", webhook, lease_ms=LONG_MS)
    assert again is not None and again.fence == 2
    await a.delete_webhook(webhook)
    assert not await b.holds("p1", again)
    assert await b.acquire("p1", webhook, lease_ms=LONG_MS) is None
    assert await b.acquire("p1", "wh_none", lease_ms=LONG_MS) is None


async def test_a_takeover_waits_for_the_holders_transaction_that_checked_its_lease(
    processes: list[PostgresStorage], postgres_dsn: str
) -> None:
    """The fencing check locks the lease row: once the lease has run out, a takeover
    still cannot commit while the holder's step that checked it is in its transaction
    (the takeover's backend is seen waiting on that lock, then goes on)."""
    a, b, _ = processes
    webhook = await _webhook(a)
    lease = await a.acquire("p0", webhook, lease_ms=200)
    assert lease is not None
    observer = await asyncpg.connect(postgres_dsn)
    checked, finish = asyncio.Event(), asyncio.Event()

    async def holder_step() -> None:
        async with a._connection() as connection, connection.transaction():
            await check_lease(connection, "p0", lease)
            checked.set()
            await finish.wait()

    async def expired() -> bool:
        return bool(
            await observer.fetchval(
                f"SELECT {SERVER_NOW} >= expires_at_ms FROM webhook_leases"  # noqa: S608
                " WHERE webhook_id = $1",
                webhook,
            )
        )

    async def takeover_waits_on_the_lock() -> bool:
        waiting = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO webhook_leases%'"
        )
        return bool(waiting)

    try:
        step = asyncio.create_task(holder_step())
        await asyncio.wait_for(checked.wait(), 10)
        await eventually(expired, what="the lease's end, in the server's clock")
        taking = asyncio.create_task(b.acquire("p1", webhook, lease_ms=LONG_MS))
        await eventually(takeover_waits_on_the_lock, what="the takeover blocked by the check")
        assert not taking.done()
        finish.set()
        await asyncio.wait_for(step, 10)
        taken = await asyncio.wait_for(taking, 10)
        assert taken is not None and taken.fence == 2
    finally:
        finish.set()
        await observer.close()


async def test_a_worker_step_after_its_lease_was_taken_over_is_refused_and_changes_nothing(
    processes: list[PostgresStorage],
) -> None:
    """The fenced outbox: the old owner's claim and record fail with ``LeaseLost`` in
    their own transaction once another process took the lease (a new fence)."""
    a, b, _ = processes
    webhook = (
        await a.create_webhook(
            NewWebhook(
                name="fenced",
                target_url="https://example.invalid/",
                events=frozenset({"COURSE_ENROLLMENT"}),
            )
        )
    ).id
    await a.append(make_events(3))
    claim = Claim(
        now_ms=2_000_000_000_000,
        retained_since_ms=0,
        max_events=1,
        max_batch_events=1,
        max_bytes=1 << 20,
        batches=1,
    )
    old = await a.acquire("p0", webhook, lease_ms=SHORT_MS)
    assert old is not None
    outbox = a.fenced_outbox("p0", old)

    async def lapsed() -> bool:
        return not await a.holds("p0", old)

    await eventually(lapsed, what="the short lease's end")
    with pytest.raises(LeaseLost):  # expired, though nobody took it yet
        await outbox.claim_batches(webhook, claim)
    new = await b.acquire("p1", webhook, lease_ms=LONG_MS)
    assert new is not None and new.fence == old.fence + 1
    [batch] = await b.fenced_outbox("p1", new).claim_batches(webhook, claim)
    with pytest.raises(LeaseLost):  # a claim with the cursor made: checked with its read
        await outbox.claim_batches(webhook, claim)
    attempt = Attempt(batch=batch, outcome=Outcome(ok=True, status=204), started_at_ms=1)
    with pytest.raises(LeaseLost):
        await outbox.record_attempts(webhook, [attempt], schedule=Schedule())
    with pytest.raises(LeaseLost):
        await outbox.in_flight_batches(webhook)
    assert await a.backlog(webhook) == 3  # nothing marked delivered
    assert [x["status"] for x in await a.attempts(webhook)] == []
    # The holder's own steps go through.
    await b.fenced_outbox("p1", new).record_attempts(webhook, [attempt], schedule=Schedule())
    assert await a.backlog(webhook) == 2

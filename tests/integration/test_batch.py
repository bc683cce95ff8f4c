"""The batch scheduler on a fake clock, with real receivers and a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from almhookd.delivery.flusher import BatchScheduler
from almhookd.domain.schedule import FlushSchedule, next_flush
from tests.support.clock import FakeClock
from tests.support.engine import Engine, running_engine
from tests.support.http_receiver import Receiver

BATCH_TOML = '[batch]\ninterval = "15m"\nmax_events_per_request = 10\n'


@pytest.fixture
async def engine(db_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    async with running_engine(db_path, clock, BATCH_TOML) as built:
        yield built


def scheduler_for(engine: Engine) -> BatchScheduler:
    return BatchScheduler(
        store=engine.store,
        clock=engine.clock,
        config=engine.config.batch,
        wake_workers=engine.wake_all,
        zone=UTC,
    )


async def test_batch_events_wait_for_the_flush_then_go_in_packed_payloads(
    engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    held = await engine.ingest(25, name="COURSE_ENROLLMENT_BATCH")
    assert await worker.step() is None  # nothing is due before the flush
    assert await engine.store.held_backlog(webhook.id) == 25
    scheduler = scheduler_for(engine)
    with capture_logs() as logs:
        assert await scheduler.flush() == {webhook.id: 25}
    [flush] = [e for e in logs if e["event"] == "batch.flush"]
    assert flush["released"] == {webhook.id: 25} and flush["events"] == 25
    assert await engine.drain(worker) == 3
    assert [len(r.event_ids) for r in receiver.received] == [10, 10, 5]
    assert receiver.all_event_ids() == held
    assert await engine.store.held_backlog(webhook.id) == 0


async def test_real_time_events_ingested_in_between_arrive_first(
    engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    progress = await engine.ingest(3, name="LEARNER_PROGRESS")
    completed = await engine.ingest(2, name="COURSE_COMPLETED")
    await engine.drain(worker)
    await scheduler_for(engine).flush()
    await engine.drain(worker)
    assert [r.event_ids for r in receiver.received] == [completed, progress]


async def test_mixed_kinds_are_never_packed_together(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    batch = await engine.ingest(2, name="COURSE_COMPLETED_BATCH")
    await scheduler_for(engine).flush()
    realtime = await engine.ingest(2, name="COURSE_COMPLETED")
    await engine.drain(worker)
    assert [r.event_ids for r in receiver.received] == [batch, realtime]


async def test_a_restart_between_flushes_keeps_the_schedule(engine: Engine) -> None:
    first = scheduler_for(engine)
    await first.start()
    engine.clock.advance(1000)
    await first.flush()
    flushed_at = engine.clock()
    await first.stop()
    engine.clock.advance(120)  # restarted two minutes later, before the next flush
    second = scheduler_for(engine)
    await second.start()
    try:
        expected = next_flush(
            flushed_at, now=engine.clock(), schedule=FlushSchedule(interval=900, zone=UTC)
        )
        assert second.next_flush_at == expected
        assert expected > engine.clock()  # neither repeated at once nor skipped
    finally:
        await second.stop()


async def test_a_restart_after_a_missed_flush_flushes_once_at_once(engine: Engine) -> None:
    first = scheduler_for(engine)
    await first.flush()
    engine.clock.advance(3 * 3600)  # down for three hours: twelve flush times missed
    second = scheduler_for(engine)
    await second.start()
    try:
        assert second.next_flush_at == engine.clock()
    finally:
        await second.stop()


async def test_a_failing_subscriber_gets_its_batch_retried_on_the_backoff_schedule(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.respond(500, 500, 202)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    held = await engine.ingest(4, name="LEARNING_PATH_ENROLLMENT_BATCH")
    await scheduler_for(engine).flush()
    assert await worker.step() == 5.0
    engine.clock.advance(5)
    assert await worker.step() == 10.0
    engine.clock.advance(10)
    assert await engine.drain(worker) == 1
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert receiver.received[-1].event_ids == held


async def test_batch_events_expire_like_real_time_ones(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    await engine.ingest(2, name="LEARNER_PROGRESS")
    engine.clock.advance(7 * 86_400 + 1)
    await scheduler_for(engine).flush()
    assert await engine.dispatcher.expire() == 2
    assert await engine.drain(worker) == 0
    assert receiver.received == []


async def test_status_shows_the_batch_backlog_and_the_next_flush(
    engine: Engine, receiver: Receiver
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from almhookd.api.app import create_app
    from almhookd.auth import TokenChecker
    from almhookd.config import Secret
    from tests.support.tokens import ADMIN_TOKEN, admin_headers

    webhook = await engine.webhook(receiver.url)
    scheduler = scheduler_for(engine)
    await scheduler.start()
    app = create_app(
        store=engine.store,
        config=engine.config,
        clock=engine.clock,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=None),
        scheduler=scheduler,
    )
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await engine.ingest(3, name="LEARNER_PROGRESS")
            await engine.ingest(2, name="CI_STATS")
            engine.clock.advance(60)
            response = await client.get("/v1/status", headers=admin_headers())
            assert response.status == 200
            body = await response.json()
    finally:
        await scheduler.stop()
    [entry] = body["webhooks"]
    assert entry["id"] == webhook.id and entry["status"] == "active"
    assert entry["backlog"] == {"realtime": 2, "batch": 3, "batchHeld": 3}
    assert entry["oldestPendingAgeMs"] == 60_000
    assert entry["failingSince"] is None and entry["nextRetryAt"] is None
    assert body["nextFlushAt"] == int(scheduler.next_flush_at * 1000)  # type: ignore[operator]

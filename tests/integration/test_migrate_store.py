"""``almhookd migrate-store``: a stopped SQLite install, with pending, delivered, held
and in-flight deliveries, attempts and a rotated secret, copied into an empty
PostgreSQL database; the copy reads back the same through the storage interface."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from almhookd.config import Secret
from almhookd.domain.batching import Claim
from almhookd.domain.policy import Outcome, Schedule
from almhookd.domain.webhooks import NewWebhook
from almhookd.errors import DatabaseInUse, StorageError
from almhookd.storage.interface import Storage
from almhookd.storage.migrate import migrate_store
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.sqlite import SqliteStorage
from almhookd.storage.values import Attempt
from tests.support.clock import FakeClock
from tests.support.events import make_events

CLAIM = Claim(
    now_ms=2_000_000_000_000,
    retained_since_ms=0,
    max_events=3,
    max_batch_events=100,
    max_bytes=1 << 20,
)
PASSWORD = "migrate-Pw-5150"


async def _fill(path: Path, clock: FakeClock) -> list[str]:
    """A SQLite install with something in every table; returns the event ids."""
    store = await SqliteStorage.open(path, clock=clock)
    try:
        hook = await store.create_webhook(
            NewWebhook(
                name="lms",
                target_url="https://example.invalid/hook",
                events=frozenset({"COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH"}),
                auth_type="signature",
                contact_email="ops@example.org",
            )
        )
        await store.rotate_secret(hook.id, grace_ms=3_600_000)
        await store.create_webhook(
            NewWebhook(
                name="archive",
                target_url="https://example.invalid/archive",
                events=frozenset({"COURSE_ENROLLMENT"}),
                auth_type="basic",
                auth_username="alm",
                auth_password=Secret("basic-password-1"),
                active=False,
            )
        )
        realtime = make_events(20)
        held = make_events(3, name="COURSE_ENROLLMENT_BATCH")
        await store.append(realtime)
        await store.append(held)
        # Seven batches: their random ids rarely sort in claim order (1 in 720 for the
        # six left in flight), so a copy that loses that order is seen.
        first, second, *rest = await store.claim_batches(hook.id, replace(CLAIM, batches=7))
        assert len(rest) == 5
        ok = Outcome(ok=True, status=200, duration_ms=7)
        failed = Outcome(ok=False, status=503, duration_ms=9, response_body="busy")
        await store.record_attempts(
            hook.id,
            [
                Attempt(batch=first, outcome=ok, started_at_ms=1),
                Attempt(batch=second, outcome=failed, started_at_ms=2),
            ],
            schedule=Schedule(consecutive_failures=1, last_error="HTTP 503"),
        )
        # second stays in flight after its failure, the rest were never answered.
        await store.release_held(now_ms=1_764_000_000_000)
        return [event.event_id for event in realtime + held]
    finally:
        await store.close()


async def _view(store: Storage, event_ids: list[str]) -> dict[str, object]:
    """What the interface shows of an install: equal views, equal installs."""
    webhooks = await store.list_webhooks()
    return {
        "webhooks": webhooks,
        "events": [await store.get_event(event_id) for event_id in event_ids],
        "count": await store.count_events(),
        "deliveries": [
            await store.deliveries(w.id, state=None, limit=1000, after_seq=0) for w in webhooks
        ],
        "attempts": [await store.attempts(w.id, limit=100) for w in webhooks],
        "in_flight": [await store.in_flight_batches(w.id) for w in webhooks],
        "backlog": [await store.backlog_summary(w.id) for w in webhooks],
        "last_flush": await store.last_flush_ms(),
    }


async def test_a_stopped_install_is_copied_whole_and_reads_back_the_same(
    tmp_path: Path, postgres_dsn: str
) -> None:
    clock = FakeClock()
    path = tmp_path / "almhookd.db"
    event_ids = await _fill(path, clock)
    copied = await migrate_store(path, Secret(postgres_dsn), clock=clock)
    assert copied == {
        "webhooks": 2,
        "webhook_events": 3,
        "signing_secrets": 2,
        "events": 23,
        "request_batches": 7,
        "deliveries": 23,
        "attempts": 2,
        "daemon_state": 1,
    }
    sqlite = await SqliteStorage.open(path, clock=clock)
    postgres = await PostgresStorage.open(Secret(postgres_dsn), clock=clock)
    try:
        before, after = await _view(sqlite, event_ids), await _view(postgres, event_ids)
        assert after == before
        # The copy goes on where the original stopped: new attempts get new ids.
        [webhook] = [w for w in await postgres.list_webhooks() if w.name == "lms"]
        # The failed batch and the one never answered are in flight, as before.
        batch, *_ = await postgres.in_flight_batches(webhook.id)
        ok = Outcome(ok=True, status=200, duration_ms=1)
        await postgres.record_attempts(
            webhook.id, [Attempt(batch=batch, outcome=ok, started_at_ms=3)], schedule=Schedule()
        )
        ids = [a["id"] for a in await postgres.attempts(webhook.id)]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
    finally:
        await sqlite.close()
        await postgres.close()


async def test_a_target_that_is_not_empty_gets_nothing(tmp_path: Path, postgres_dsn: str) -> None:
    clock = FakeClock()
    path = tmp_path / "almhookd.db"
    await _fill(path, clock)
    await migrate_store(path, Secret(postgres_dsn), clock=clock)
    with pytest.raises(StorageError, match="not empty"):
        await migrate_store(path, Secret(postgres_dsn), clock=clock)


async def test_a_running_install_or_a_missing_file_is_refused(
    tmp_path: Path, postgres_dsn: str
) -> None:
    clock = FakeClock()
    path = tmp_path / "almhookd.db"
    with pytest.raises(StorageError, match="no SQLite database there"):
        await migrate_store(path, Secret(postgres_dsn), clock=clock)
    assert not path.exists()
    await _fill(path, clock)
    running = await SqliteStorage.open(path, clock=clock)  # as a daemon holds it
    try:
        with pytest.raises(DatabaseInUse):
            await migrate_store(path, Secret(postgres_dsn), clock=clock)
    finally:
        await running.close()
    probe = await PostgresStorage.open(Secret(postgres_dsn), clock=clock)
    try:
        assert await probe.count_events() == 0
    finally:
        await probe.close()


def test_the_command_copies_and_never_prints_the_password(
    tmp_path: Path, postgres_dsn: str
) -> None:
    path = tmp_path / "data" / "almhookd.db"
    path.parent.mkdir()
    asyncio.run(_fill(path, FakeClock()))
    config = tmp_path / "almhookd.toml"
    config.write_text(f'[storage]\npath = "{path}"\n')
    dsn = postgres_dsn.replace("://almhookd_test@", f"://almhookd_test:{PASSWORD}@")
    env = {**os.environ, "ALMHOOKD_DATABASE_DSN": dsn}
    env.pop("ALMHOOKD_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "almhookd", "migrate-store", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "events 23" in done.stdout and "deliveries 23" in done.stdout
    assert ":***@127.0.0.1" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    again = subprocess.run(
        [sys.executable, "-m", "almhookd", "migrate-store", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "not empty" in again.stderr
    assert PASSWORD not in again.stdout + again.stderr

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from almhookd.domain.batching import Claim
from almhookd.domain.webhooks import NewWebhook
from almhookd.errors import (
    DatabaseInUse,
    StorageClosed,
    StorageError,
    StorageFull,
)
from almhookd.storage.sqlite import SqliteStorage as Store
from almhookd.storage.sqlite import engine
from almhookd.storage.sqlite.files import lock_path
from almhookd.storage.sqlite.migrations import SCHEMA_VERSION
from almhookd.storage.sqlite.queries import (
    CLAIM_AROUND_SENDING_SQL,
    CLAIM_SQL,
    DELIVERED_SQL,
    OUTSTANDING_SQL,
    SENDING_HIGH_WATER_SQL,
    SUBSCRIBERS_SQL,
    event_key,
)
from almhookd.storage.sqlite.webhooks import BACKLOG_SUMMARY_SQL
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.events import make_events
from tests.support.running import until


def _count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


async def test_the_database_is_private_wal_and_migrated(store: Store, db_path: Path) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    await store.append(make_events(1))
    wal = db_path.with_name(db_path.name + "-wal")
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # synchronous is per connection: FULL (2) on the store's own.
    assert await store._writer_pragma("synchronous") == 2


async def test_a_grown_wal_is_truncated_once_writes_pause(
    db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CHECKPOINT_INTERVAL", 0.05)
    monkeypatch.setattr(engine, "WAL_SHRINK_BYTES", 256 * 1024)
    store = await Store.open(db_path, clock=clock)
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        for round_ in range(5):  # each commit alone grows the WAL past the limit, and
            # none of them shrinks it (that is left to the checkpoint task)
            await store.append(make_events(2000, prefix=f"r{round_}-", padding="x" * 200))
            assert wal.stat().st_size > 256 * 1024
        await until(
            lambda: wal.stat().st_size == 0, what="the checkpoint task truncating the grown WAL"
        )
        assert await store.count_events() == 10_000
    finally:
        await store.close()


async def test_an_existing_file_is_tightened_to_0600(db_path: Path, clock: FakeClock) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.touch(mode=0o644)
    db_path.chmod(0o644)
    store = await Store.open(db_path, clock=clock)
    await store.close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


async def test_reopening_keeps_data_and_does_not_migrate_again(
    db_path: Path, clock: FakeClock
) -> None:
    store = await Store.open(db_path, clock=clock)
    await store.append(make_events(3))
    await store.close()
    store = await Store.open(db_path, clock=clock)
    assert await store.count_events() == 3
    await store.close()


async def test_a_newer_schema_is_refused(db_path: Path, clock: FakeClock) -> None:
    await (await Store.open(db_path, clock=clock)).close()
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer than this almhookd supports"):
        await Store.open(db_path, clock=clock)


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path, clock: FakeClock) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a database"):
        await Store.open(db_path, clock=clock)


async def test_an_uncreatable_path_is_a_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot create the database"):
        await Store.open(tmp_path / "file" / "sub" / "a.db", clock=clock)


async def test_concurrent_appends_share_commits(store: Store) -> None:
    batches = [make_events(1) for _ in range(200)]
    results = await asyncio.gather(*(store.append(batch) for batch in batches))
    assert all(r.accepted == 1 for r in results)
    assert await store.count_events() == 200
    # The writer thread may start on the first ones while the loop queues the rest, but
    # each drain takes every request waiting: far fewer transactions than requests.
    assert store.commits <= 20


async def test_an_append_is_acknowledged_after_the_fsync_that_follows_its_commit(
    db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit does not wait for the disk, the acknowledgement does; commits made
    while one fsync runs share the next one. Workers are woken at each commit."""
    woken: list[int] = []
    store = await Store.open(
        db_path, clock=clock, on_events_committed=lambda: woken.append(store.commits)
    )
    release, fsyncs = threading.Event(), []
    real_fsync = store._fsync_wal

    def slow_fsync() -> None:
        fsyncs.append(store.commits)
        assert release.wait(10)
        real_fsync()

    monkeypatch.setattr(store, "_fsync_wal", slow_fsync)
    first = asyncio.ensure_future(store.append(make_events(1)))
    await until(lambda: bool(fsyncs), what="the fsync of the first commit starting")
    later = []
    for commit in range(2, 6):  # four more commits, readable while the fsync runs
        later.append(asyncio.ensure_future(store.append(make_events(1))))
        await until(
            lambda: store.commits >= commit,  # noqa: B023 - awaited within this iteration
            what=f"commit {commit} while the fsync runs",
        )
    assert await store.count_events() == 5
    assert not first.done() and not any(p.done() for p in later)
    # Workers are woken at each commit, and deliver while the fsync runs (the wake-up is
    # queued to the loop just after the count goes up, so a later commit may be seen).
    assert len(woken) == 5 and woken == sorted(woken) and woken[-1] == 5
    release.set()
    assert all(r.accepted == 1 for r in await asyncio.gather(first, *later))
    assert fsyncs == [1, 5]  # one for the first commit, one for the four others
    await store.close()


async def test_a_failed_fsync_stops_ingest_until_a_restart(
    store: Store, db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may drop pages it could not write: nothing more is acknowledged, and
    the watchdog's ping and /healthz's check fail, so that systemd restarts almhookd."""

    def failing_fsync() -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store, "_fsync_wal", failing_fsync)
    with pytest.raises(StorageError, match=r"Input/output error.*restarted"):
        await store.append(make_events(1))
    monkeypatch.undo()
    for attempt in (store.append(make_events(1)), store.ping(), store.check()):
        with pytest.raises(StorageError, match="restarted"):
            await attempt
    await store.close()
    reopened = await Store.open(db_path, clock=clock)
    try:
        assert (await reopened.append(make_events(1))).accepted == 1
    finally:
        await reopened.close()


async def test_a_second_store_on_an_open_database_is_refused_until_it_closes(
    store: Store, db_path: Path, clock: FakeClock
) -> None:
    lock = lock_path(db_path)
    assert lock == db_path.with_name("almhookd.db.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.read_text() == f"{os.getpid()}\n"
    message = f"the database {db_path} is in use by another almhookd (pid {os.getpid()})"
    with pytest.raises(DatabaseInUse) as refused:
        await Store.open(db_path, clock=clock)
    assert refused.value.message == message
    assert (await store.append(make_events(1))).accepted == 1  # the first one is untouched
    await store.close()
    reopened = await Store.open(db_path, clock=clock)
    await reopened.close()


def _wal_descriptors(wal: Path) -> list[str]:
    """This process's descriptors open on the WAL file, deleted or not."""
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            targets.append(os.readlink(fd))
    return [t for t in targets if t in (str(wal), f"{wal} (deleted)")]


async def test_the_syncer_opens_the_wal_once_and_closes_it_with_the_store(
    db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = db_path.with_name(db_path.name + "-wal")
    wal_opens: list[str] = []
    real_open = os.open

    def counting_open(
        path: str | os.PathLike[str], flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if str(path) == str(wal):
            wal_opens.append(str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", counting_open)
    store = await Store.open(db_path, clock=clock)
    try:
        await store.append(make_events(1))
        inode = wal.stat().st_ino
        for round_ in range(30):
            await store.append(make_events(20, prefix=f"once-{round_}-"))
            if round_ == 15:  # SQLite truncates the WAL in place, never replaces it
                await store._read.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                assert wal.stat().st_size == 0
        assert store.commits == 31 and wal.stat().st_ino == inode
        assert wal_opens == [str(wal)]
    finally:
        await store.close()
    assert _wal_descriptors(wal) == []


async def test_a_new_wal_file_at_the_path_is_opened_anew(store: Store, db_path: Path) -> None:
    wal = db_path.with_name(db_path.name + "-wal")
    await store.append(make_events(1))
    held = store._wal_identity
    loop = asyncio.get_running_loop()
    aside = wal.with_name("aside")
    wal.rename(aside)
    try:
        wal.write_bytes(b"")
        await loop.run_in_executor(store._syncer, store._fsync_wal)
        assert store._wal_identity == (wal.stat().st_dev, wal.stat().st_ino) != held
    finally:
        aside.replace(wal)  # SQLite still writes to the file it opened
    await loop.run_in_executor(store._syncer, store._fsync_wal)
    assert store._wal_identity == held
    assert (await store.append(make_events(1))).accepted == 1


async def test_a_write_back_error_another_descriptor_was_told_of_still_stops_ingest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux reports a write-back error once to each descriptor open when it happened,
    at its next fsync, and not to descriptors opened later: should SQLite's own fsync
    (at a checkpoint) be told first, only a descriptor the syncer already held sees it."""
    wal = str(store.path) + "-wal"
    real_open, real_close, real_fsync = os.open, os.close, os.fsync
    open_on_wal: set[int] = set()
    told_of_error: set[int] = set()

    def tracking_open(
        path: str | os.PathLike[str], flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if str(path) == wal:
            open_on_wal.add(fd)
        return fd

    def tracking_close(fd: int) -> None:
        open_on_wal.discard(fd)
        told_of_error.discard(fd)
        real_close(fd)

    def reporting_fsync(fd: int) -> None:
        if fd in told_of_error:
            told_of_error.discard(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "close", tracking_close)
    monkeypatch.setattr(os, "fsync", reporting_fsync)
    assert (await store.append(make_events(1))).accepted == 1
    told_of_error.update(open_on_wal)  # the kernel fails to write some of the WAL's pages
    with pytest.raises(StorageError, match=r"Input/output error.*restarted"):
        await store.append(make_events(1))
    with pytest.raises(StorageError, match="restarted"):
        await store.append(make_events(1))


async def test_close_commits_what_is_queued_and_is_idempotent(
    db_path: Path, clock: FakeClock
) -> None:
    store = await Store.open(db_path, clock=clock)
    pending = [asyncio.ensure_future(store.append(make_events(2))) for _ in range(20)]
    await asyncio.sleep(0)
    await asyncio.gather(store.close(), store.close())
    assert all(p.result().accepted == 2 for p in pending)
    assert _count(db_path) == 40
    with pytest.raises(StorageClosed):
        await store.append(make_events(1))


async def test_a_full_database_stores_nothing_of_the_group(store: Store, db_path: Path) -> None:
    await store.append(make_events(2))
    pages = await store._writer_pragma("page_count")
    await store._writer_pragma(f"max_page_count = {pages + 2}")
    with pytest.raises(StorageFull, match="full"):
        await store.append(make_events(50, padding="x" * 4000))
    assert await store.count_events() == 2
    # The writer survives the failure and goes on with the next request.
    await store._writer_pragma("max_page_count = 1073741823")
    assert (await store.append(make_events(1))).accepted == 1
    await store.check()


async def test_colliding_event_keys_are_told_apart_by_the_id(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from almhookd.storage.sqlite import events, ingest, webhooks

    # Every module that looks events up by key (store, read, replay).
    for module in (ingest, events, webhooks):
        monkeypatch.setattr(module, "event_key", lambda event_id: 42)
    first, second = make_events(2)
    assert (await store.append([first])).accepted == 1
    result = await store.append([second, first])
    assert (result.accepted, result.duplicates) == (1, 1)
    for event in (first, second):
        stored = await store.get_event(event.event_id)
        assert stored is not None and stored.event_id == event.event_id


def test_hot_queries_use_their_indexes() -> None:
    """A claim must not walk a webhook's delivered rows (they stay for 7 days)."""
    from almhookd.storage.sqlite.migrations import MIGRATIONS

    db = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        db.executescript(migration)
    plans = {
        "claim": CLAIM_SQL,
        "claim around sending": CLAIM_AROUND_SENDING_SQL,
        "high water": SENDING_HIGH_WATER_SQL,
        "backlog": OUTSTANDING_SQL,
        "event": "SELECT webhook_id FROM deliveries WHERE event_seq = ?",
        "release": "UPDATE deliveries INDEXED BY deliveries_held SET due_at_ms = 1"
        " WHERE state = 'pending' AND due_at_ms IS NULL",
        "duplicates": "SELECT event_id FROM events WHERE event_key IN (1, 2)",
        "acknowledge": DELIVERED_SQL,
        "subscribers": SUBSCRIBERS_SQL,
        "backlog summary": BACKLOG_SUMMARY_SQL,
    }
    expected = {
        # Migration 3: a claim and the check below the batches being sent read the
        # ready index alone, no row of the table.
        "claim": "COVERING INDEX deliveries_ready",
        "claim around sending": "COVERING INDEX deliveries_ready",
        "high water": "COVERING INDEX deliveries_ready",
        "backlog": "deliveries_held",
        "event": "deliveries_by_event",
        "release": "deliveries_held",
        "duplicates": "events_by_key",
        # Each acknowledged pair looks its delivery up: not the webhook's every delivery,
        # each searching the pairs.
        "acknowledge": "SCAN acked SEARCH deliveries USING PRIMARY KEY"
        " (webhook_id=? AND event_seq=?)",
        # An ingest commit reads the subscriptions of its events' names only.
        "subscribers": "SEARCH s USING PRIMARY KEY (event_name=?)",
        # Migration 4: the backlog by kind from the two indexes of pending deliveries,
        # no event and no row of the table read.
        "backlog summary": "COVERING INDEX deliveries_ready",
    }
    for name, sql in plans.items():
        plan = " ".join(
            row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, (1,) * sql.count("?"))
        )
        assert expected[name] in plan, (name, plan)


async def test_migration_4_gives_each_delivery_its_events_kind(
    db_path: Path, clock: FakeClock
) -> None:
    """A database of schema 3 with pending deliveries of both kinds, released and held:
    after the upgrade the backlog is counted by kind from the deliveries alone."""
    from almhookd.storage.sqlite.migrations import MIGRATIONS

    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path, isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:3], start=1):
        db.executescript(f"BEGIN;\n{migration}\nPRAGMA user_version = {number};\nCOMMIT;")
    db.execute(
        "INSERT INTO webhooks (id, name, target_url, created_at_ms, updated_at_ms)"
        " VALUES ('wh_1', 'one', 'https://example.invalid/hook', 0, 0)"
    )
    db.executemany(
        "INSERT INTO events (seq, event_key, event_id, event_name, account_id, timestamp_ms,"
        " realtime, ingested_at_ms, body) VALUES (?, ?, ?, ?, 7, 0, ?, ?, ?)",
        [
            (1, event_key("ev-1"), "ev-1", "COURSE_ENROLLMENT", 1, 500, '{"eventId":"ev-1"}'),
            (2, event_key("ev-2"), "ev-2", "COURSE_ENROLLMENT_BATCH", 0, 600, "{}"),
            (3, event_key("ev-3"), "ev-3", "COURSE_ENROLLMENT_BATCH", 0, 700, "{}"),
        ],
    )
    db.execute(
        "INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms)"
        " VALUES ('wh_1', 1, 'pending', 500), ('wh_1', 2, 'pending', 650),"
        " ('wh_1', 3, 'pending', NULL)"
    )
    db.close()
    store = await Store.open(db_path, clock=clock)
    try:
        summary = await store.backlog_summary("wh_1")
        assert summary == {"realtime": 1, "batch": 2, "held": 1, "oldest": 500}
    finally:
        await store.close()
    with sqlite3.connect(db_path) as db:
        kinds = db.execute("SELECT event_seq, realtime FROM deliveries ORDER BY 1").fetchall()
    assert kinds == [(1, 1), (2, 0), (3, 0)]


async def test_migration_2_keeps_a_batch_being_sent(db_path: Path, clock: FakeClock) -> None:
    """A database of schema 1 with a request in flight: after the upgrade the same batch,
    same id and events, is the one to send again, and its events show as sending."""
    from almhookd.storage.sqlite.migrations import MIGRATIONS

    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.executescript(
        """
        INSERT INTO webhooks (id, name, target_url, created_at_ms, updated_at_ms)
            VALUES ('wh_1', 'one', 'https://example.invalid/hook', 0, 0);
        INSERT INTO request_batches (id, webhook_id, created_at_ms, attempts, state)
            VALUES ('msg_old', 'wh_1', 1, 2, 'delivered'),
                   ('msg_flight', 'wh_1', 2, 3, 'sending');
        INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms, attempts, batch_id,
                                delivered_at_ms)
            VALUES ('wh_1', 1, 'delivered', 0, 2, 'msg_old', 9),
                   ('wh_1', 2, 'sending', 0, 3, 'msg_flight', NULL),
                   ('wh_1', 3, 'sending', 0, 3, 'msg_flight', NULL);
        """
    )
    db.executemany(
        "INSERT INTO events (seq, event_key, event_id, event_name, account_id, timestamp_ms,"
        " realtime, ingested_at_ms, body) VALUES (?, ?, ?, 'COURSE_ENROLLMENT', 7, 0, 1, 5, ?)",
        [
            (seq, event_key(f"ev-{seq}"), f"ev-{seq}", f'{{"eventId":"ev-{seq}"}}')
            for seq in (1, 2, 3)
        ],
    )
    db.close()
    store = await Store.open(db_path, clock=clock)
    try:
        [batch] = await store.in_flight_batches("wh_1")
        assert (batch.id, batch.event_ids, batch.attempts) == ("msg_flight", ("ev-2", "ev-3"), 3)
        assert batch.body == b'{"accountId":7,"events":[{"eventId":"ev-2"},{"eventId":"ev-3"}]}'
        states = {}
        for event_id in ("ev-1", "ev-2"):
            event = await store.get_event(event_id)
            assert event is not None
            states[event_id] = event.deliveries[0].state
        assert states == {"ev-1": "delivered", "ev-2": "sending"}
        assert await store.backlog("wh_1") == 2
    finally:
        await store.close()


def test_an_old_sqlite_is_refused_by_name(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(StorageError, match=r"needs SQLite 3\.35 or later; .* uses SQLite 3\.34\.1"):
        asyncio.run(Store.open(tmp_path / "old.db", clock=clock))
    assert not (tmp_path / "old.db").exists()


# --- read snapshots, webhook limit, replay -----------------------------------------


@contextlib.contextmanager
def statements_on(connection: sqlite3.Connection) -> Iterator[list[str]]:
    """The SQL ``connection`` runs meanwhile (SQLite's trace callback), in order."""
    executed: list[str] = []
    connection.set_trace_callback(executed.append)
    try:
        yield executed
    finally:
        connection.set_trace_callback(None)


def _new_webhook(name: str, events: frozenset[str] = frozenset(samples.ALL)) -> NewWebhook:
    return NewWebhook(name=name, target_url="https://example.invalid/", events=events)


async def test_a_read_after_a_write_sees_it_while_other_reads_run(store: Store) -> None:
    # Readers keep the shared reader connection busy with one-row statements. Were a
    # statement left open between its execute and its fetch, the snapshot it holds
    # would serve the reads in between, and a webhook just committed would be missing.
    writes_done = asyncio.Event()

    async def keep_reading() -> int:
        for reads in range(1, 100_000):
            if writes_done.is_set():
                return reads
            await store._fetchall("SELECT count(*) FROM webhooks")
        raise AssertionError("the writes never finished")

    readers = [asyncio.create_task(keep_reading()) for _ in range(8)]
    try:
        for number in range(1, 31):
            created = await store.create_webhook(_new_webhook(f"hook {number}"))
            assert await store.get_webhook(created.id) == created
            assert len(await store.list_webhooks()) == number
    finally:
        writes_done.set()
    assert min(await asyncio.gather(*readers)) > 1  # the reads did overlap the writes


async def test_listing_webhooks_is_one_statement_whatever_their_number(store: Store) -> None:
    for number in range(3):
        await store.create_webhook(_new_webhook(f"hook {number}"))
    signed = await store.create_webhook(replace(_new_webhook("signed"), auth_type="signature"))
    await store.rotate_secret(signed.id, grace_ms=60_000)
    executed: list[str] = []
    await store._read.set_trace_callback(executed.append)  # on the reader's own thread
    listed = {webhook.name: webhook for webhook in await store.list_webhooks()}
    await store._read.set_trace_callback(lambda statement: None)
    assert len(executed) == 1  # one statement, so one snapshot of every webhook
    assert sorted(listed) == ["hook 0", "hook 1", "hook 2", "signed"]
    assert all(webhook.events == set(samples.ALL) for webhook in listed.values())
    secrets = listed["signed"].secrets
    assert len(secrets) == 2 and secrets[0].created_at_ms < secrets[1].created_at_ms
    assert secrets[0].expires_at_ms is not None and secrets[1].expires_at_ms is None


async def test_replay_of_many_events_is_one_write_of_one_statement(
    store: Store, clock: FakeClock
) -> None:
    before_webhook = make_events(1, prefix="before")  # no delivery row for the webhook
    await store.append(before_webhook)
    webhook = await store.create_webhook(
        _new_webhook("replayed", events=frozenset({"COURSE_ENROLLMENT"}))
    )
    events = make_events(4, prefix="replay")
    other_name = make_events(1, prefix="other", name="COURSE_COMPLETED")
    await store.append([*events, *other_name])
    # The first event goes into a request being sent: a replay leaves it alone.
    claim = Claim(
        now_ms=int(clock() * 1000),
        retained_since_ms=0,
        max_events=1,
        max_batch_events=1,
        max_bytes=1 << 20,
    )
    [sending] = await store.claim_batches(webhook.id, claim)
    assert list(sending.event_ids) == [events[0].event_id]
    every_id = [e.event_id for e in (*before_webhook, *events, *other_name)]

    writes = store.writes
    assert store._db is not None
    with statements_on(store._db) as executed:
        queued = await store.replay(
            webhook.id, event_ids=every_id, retained_since_ms=0, now_ms=int(clock() * 1000)
        )
    assert store.writes - writes == 1
    # BEGIN, one statement for the five events, COMMIT.
    assert len(executed) == 3 and executed[0] == "BEGIN IMMEDIATE", executed
    assert queued == 4  # three requeued, one inserted; the one being sent is not
    states = await store.deliveries(webhook.id, state=None, limit=100, after_seq=0)
    assert {d["eventId"]: d["state"] for d in states} == {
        before_webhook[0].event_id: "pending",
        events[0].event_id: "sending",
        **{e.event_id: "pending" for e in events[1:]},
    }


async def test_the_connection_that_commits_ingest_has_a_larger_page_cache(store: Store) -> None:
    """Ingest's random event keys outgrow SQLite's 2 MiB default within seconds."""

    def cache_sizes() -> tuple[int, int]:
        assert store._bookkeeping is not None and store._db is not None
        return (
            store._bookkeeping.execute("PRAGMA cache_size").fetchone()[0],
            store._db.execute("PRAGMA cache_size").fetchone()[0],
        )

    bookkeeping, durable = await store._run(cache_sizes)
    assert bookkeeping == -engine.BOOKKEEPING_CACHE_KIB == -32 * 1024
    assert durable == -2000  # SQLite's default: webhooks and admin changes are small


async def test_close_waits_for_appends_whose_callers_were_cancelled(
    db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled caller's events are still committed and synced before the store
    closes; the store closes (no hang) and they are there on reopening."""
    store = await Store.open(db_path, clock=clock)
    release, started = threading.Event(), threading.Event()
    real_fsync = store._fsync_wal

    def slow_fsync() -> None:
        started.set()
        assert release.wait(10)
        real_fsync()

    monkeypatch.setattr(store, "_fsync_wal", slow_fsync)
    events = make_events(3)
    waiting = asyncio.ensure_future(store.append(events))
    await until(started.is_set, what="the fsync under way")
    waiting.cancel()
    closing = asyncio.ensure_future(store.close())
    release.set()
    await asyncio.wait_for(closing, 10)
    assert waiting.cancelled()
    reopened = await Store.open(db_path, clock=clock)
    try:
        assert await reopened.count_events() == 3
    finally:
        await reopened.close()


async def test_a_request_that_breaks_its_group_fails_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that break the transaction (not the storage) fail their own request only:
    the group is committed again one request at a time; then the store still closes."""
    from almhookd.storage.sqlite.ingest import insert_events as real_insert

    def picky_insert(db: sqlite3.Connection, group: list[Any], now_ms: int) -> Any:
        if any(event.event_name == "CI_STATS" for pending in group for event in pending.events):
            raise TypeError("a value the driver cannot bind")
        return real_insert(db, group, now_ms)

    monkeypatch.setattr(engine, "insert_events", picky_insert)
    good = [make_events(1) for _ in range(3)]
    bad = [e._replace(event_name="CI_STATS") for e in make_events(1)]
    # The writer thread held busy while the four queue, so that they make one group.
    release = threading.Event()
    held = store._executor.submit(release.wait, 10)
    appends = [asyncio.ensure_future(store.append(batch)) for batch in (*good, bad)]
    await until(lambda: len(store._appends) == 4, what="the four requests queued")
    release.set()
    assert held.result(10)
    results = await asyncio.gather(*appends, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "AppendResult",
        "AppendResult",
        "AppendResult",
        "StorageError",
    ]
    assert "a value the driver cannot bind" in str(results[3])
    assert await store.count_events() == 3
    await asyncio.wait_for(store.close(), 10)


async def test_check_fails_while_the_writer_thread_is_stuck_and_recovers_after(
    store: Store,
) -> None:
    """A drain that hangs (here: the writer thread held by a job that waits) holds up the
    write probe queued behind it, so ``check()``, and with it ``/healthz``, fails."""
    release = threading.Event()
    store._executor.submit(release.wait)
    try:
        appending = asyncio.ensure_future(store.append(make_events(1)))
        with pytest.raises(StorageError, match="takes no writes"):
            await store.check()
        assert not appending.done()
    finally:
        release.set()
    assert (await asyncio.wait_for(appending, 10)).accepted == 1
    await store.check()

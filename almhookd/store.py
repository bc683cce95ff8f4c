"""The SQLite outbox: the one module that talks to the database.

One connection (aiosqlite runs it on its own thread), WAL journal, ``synchronous=FULL``
so a committed transaction survives a power cut. Ingest goes through a single writer
task that commits whatever requests are waiting in one transaction (group commit): a
request is acknowledged only after its transaction is on disk, yet a busy daemon pays
one fsync per group, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiosqlite
import structlog

from almhookd.errors import StorageClosed, StorageError, StorageFull
from almhookd.ingest import NewEvent
from almhookd.migrations import MIGRATIONS, SCHEMA_VERSION
from almhookd.protocols import Clock

log = structlog.get_logger("almhookd.store")

#: Upper bound on the events one group commit writes, so one transaction stays short.
MAX_GROUP_EVENTS: Final = 20_000


@dataclass(frozen=True, kw_only=True, slots=True)
class AppendResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryState:
    webhook_id: str
    state: str
    attempts: int
    batch_id: str | None
    delivered_at_ms: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    event_name: str
    account_id: int
    timestamp_ms: int
    realtime: bool
    ingested_at_ms: int
    body: dict[str, Any]
    deliveries: tuple[DeliveryState, ...] = ()


@dataclass(kw_only=True, slots=True)
class _PendingAppend:
    events: Sequence[NewEvent]
    done: asyncio.Future[AppendResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _storage_error(error: sqlite3.Error, path: Path) -> StorageError:
    if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(f"{path}: database or disk is full")
    return StorageError(f"{path}: {error}")


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only (WAL and SHM files follow)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


class Store:
    """Durable storage of events and delivery state."""

    def __init__(self, db: aiosqlite.Connection, *, path: Path, clock: Clock) -> None:
        self._db = db
        self.path = path
        self._clock = clock
        self._queue: asyncio.Queue[_PendingAppend | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        #: write transactions committed by the writer since opening
        self.commits = 0

    @classmethod
    async def open(cls, path: Path, *, clock: Clock) -> Store:
        """Open (creating and migrating as needed) the database at ``path``."""
        try:
            _create_private_file(path)
        except OSError as error:
            raise StorageError(f"{path}: cannot create the database: {error.strerror}") from None
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            raise _storage_error(error, path) from None
        store = cls(db, path=path, clock=clock)
        try:
            await store._prepare()
        except sqlite3.Error as error:
            await db.close()
            raise _storage_error(error, path) from None
        except BaseException:
            await db.close()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="almhookd-store-writer")
        return store

    async def _prepare(self) -> None:
        for pragma in (
            "journal_mode = WAL",
            "synchronous = FULL",
            "foreign_keys = ON",
            "busy_timeout = 5000",
        ):
            await self._db.execute(f"PRAGMA {pragma}")
        cursor = await self._db.execute("PRAGMA journal_mode")
        row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise StorageError(f"{self.path}: cannot switch the database to WAL mode")
        await self._migrate()

    async def _migrate(self) -> None:
        cursor = await self._db.execute("PRAGMA user_version")
        row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: database schema version {version} is newer than this almhookd "
                f"supports ({SCHEMA_VERSION}); upgrade almhookd"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            # executescript runs the whole migration, version bump included, in one
            # transaction: a crash leaves the database at the old version, never between.
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\nPRAGMA user_version = {number};\n"
                "COMMIT;"
            )
            log.info("store.migrated", path=str(self.path), schema_version=number)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- ingest ----------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store ``events`` durably; returns once they are committed to disk.

        An event whose ``event_id`` is already stored is a duplicate and is not stored
        again; a second copy within the same call counts as a duplicate too.
        """
        if self._closing:
            raise StorageClosed()
        pending = _PendingAppend(events=events)
        self._queue.put_nowait(pending)
        return await asyncio.shield(pending.done)

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            group, size = [first], len(first.events)
            while size < MAX_GROUP_EVENTS and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item.events)
            await self._commit_group(group)

    async def _commit_group(self, group: list[_PendingAppend]) -> None:
        try:
            results = await self._insert_events(group)
        except Exception as error:
            failure = (
                _storage_error(error, self.path)
                if isinstance(error, sqlite3.Error)
                else error
                if isinstance(error, StorageError)
                else StorageError(f"{self.path}: {type(error).__name__}: {error}")
            )
            log.error("store.commit_failed", error=failure.message, requests=len(group))
            for pending in group:
                if not pending.done.done():
                    pending.done.set_exception(failure)
            return
        self.commits += 1
        for pending, result in zip(group, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    async def _insert_events(self, group: list[_PendingAppend]) -> list[AppendResult]:
        now_ms = self._now_ms()
        ids = [event.event_id for pending in group for event in pending.events]
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await self._db.execute(
                "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            known = {row[0] for row in await cursor.fetchall()}
            rows: list[tuple[object, ...]] = []
            results = []
            for pending in group:
                accepted = 0
                for event in pending.events:
                    if event.event_id in known:
                        continue
                    known.add(event.event_id)
                    accepted += 1
                    rows.append(
                        (
                            event.event_id,
                            event.event_name,
                            event.account_id,
                            event.timestamp_ms,
                            int(event.realtime),
                            now_ms,
                            event.body,
                        )
                    )
                results.append(
                    AppendResult(accepted=accepted, duplicates=len(pending.events) - accepted)
                )
            if rows:
                await self._db.executemany(
                    "INSERT INTO events (event_id, event_name, account_id, timestamp_ms,"
                    " realtime, ingested_at_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            await self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
            raise
        return results

    # --- reads -----------------------------------------------------------------------

    async def get_event(self, event_id: str) -> StoredEvent | None:
        try:
            cursor = await self._db.execute(
                "SELECT seq, event_id, event_name, account_id, timestamp_ms, realtime,"
                " ingested_at_ms, body FROM events WHERE event_id = ?",
                (event_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            cursor = await self._db.execute(
                "SELECT webhook_id, state, attempts, batch_id, delivered_at_ms FROM deliveries"
                " WHERE event_seq = ? ORDER BY webhook_id",
                (row[0],),
            )
            deliveries = tuple(
                DeliveryState(
                    webhook_id=d[0], state=d[1], attempts=d[2], batch_id=d[3], delivered_at_ms=d[4]
                )
                for d in await cursor.fetchall()
            )
        except sqlite3.Error as error:
            raise _storage_error(error, self.path) from None
        return StoredEvent(
            seq=row[0],
            event_id=row[1],
            event_name=row[2],
            account_id=row[3],
            timestamp_ms=row[4],
            realtime=bool(row[5]),
            ingested_at_ms=row[6],
            body=json.loads(row[7]),
            deliveries=deliveries,
        )

    async def count_events(self) -> int:
        cursor = await self._db.execute("SELECT count(*) FROM events")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def check(self) -> None:
        """Raise :class:`StorageError` unless the database answers and the writer runs."""
        if self._closing:
            raise StorageClosed()
        if self._writer is None or self._writer.done():
            raise StorageError(f"{self.path}: the store writer is not running")
        try:
            cursor = await self._db.execute("SELECT count(*) FROM sqlite_master")
            await cursor.fetchone()
        except sqlite3.Error as error:
            raise _storage_error(error, self.path) from None

    # --- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what is queued, then close the database. Safe to call more than once."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._writer is not None:
                self._queue.put_nowait(None)
                await self._writer
            await self._db.close()
        finally:
            self._closed.set()

"""The SQLite outbox: the one module that talks to the database.

Two connections on a WAL database. Writes go to a stdlib ``sqlite3`` connection owned
by one dedicated thread: each write transaction is one function run there, start to
commit, so it costs one hop from the event loop and transactions never interleave.
Reads go through an aiosqlite connection, which sees only committed data. The reader's
thread also runs WAL checkpoints, so commits never pay for them.

Ingest commits whatever requests are waiting in one transaction (group commit), with no
hop through the event loop between the stages: an ``append`` queues its events and, when
no drain is scheduled, schedules one on the writer thread; the drain takes every waiting
request, commits them, and hands the group straight to the syncer thread, which fsyncs
the write-ahead log once for every group committed before it started and then settles
their requests with one call into the loop. A request is acknowledged only once its
transaction is on disk; the write lock is not held through the fsync, so delivery
bookkeeping and the next ingest groups commit while it runs. A failed fsync stops all
ingest until a restart (the kernel may have dropped the pages it could not write).
Delivery bookkeeping commits with ``synchronous=NORMAL`` and is never waited for on
disk: in WAL mode that survives a crash of the process; a power cut may lose the last
bookkeeping commits, which only means a batch is sent again (a duplicate the subscriber
de-duplicates), never that an event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import aiosqlite
import structlog

from almhookd.domain.events import NewEvent
from almhookd.errors import (
    StorageClosed,
    StorageError,
)
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted
from almhookd.storage.sqlite.files import DatabaseLock, create_private_file, file_identity
from almhookd.storage.sqlite.ingest import PendingAppend, insert_events
from almhookd.storage.sqlite.migrations import MIGRATIONS, SCHEMA_VERSION
from almhookd.storage.sqlite.queries import storage_error
from almhookd.storage.values import (
    AppendResult,
)

log = structlog.get_logger("almhookd.storage")


#: Upper bound on the events one group commit writes, so one transaction stays short.
MAX_GROUP_EVENTS: Final = 20_000

#: Bytes the space probe writes: a few pages, as a small ingest request would need.
_PROBE_BYTES: Final = 16 * 1024

#: How often the reader's thread checkpoints the WAL into the database file.
CHECKPOINT_INTERVAL: Final = 1.0

#: The writer checkpoints by itself only past this many WAL pages (a safety net should
#: the checkpoint task fall behind).
WAL_AUTOCHECKPOINT_PAGES: Final = 50_000

#: Once writes pause for a checkpoint interval, a WAL file larger than this is truncated.
#: Commits never truncate it (no ``journal_size_limit``): truncating a WAL whose pages
#: an fsync is writing made one commit in 3,000 wait 150 to 180 ms.
WAL_SHRINK_BYTES: Final = 64 * 1024 * 1024

#: ``WITH ... AS MATERIALIZED`` (3.35) and ``UPDATE ... FROM`` (3.33).
MIN_SQLITE: Final = (3, 35)

#: The page cache of the connection that commits ingest and delivery state, in KiB
#: (SQLite's default is 2 MiB): random event keys and the deliveries' indexes outgrow
#: 2 MiB within seconds of steady ingest, and every miss is a read from the OS.
#: Measured with 500-event envelopes and one webhook: the writer's CPU per event
#: 15.3 → 13.4 µs, events/s 43,000 → 46,000 (BENCHMARKS.md, issue 22).
BOOKKEEPING_CACHE_KIB: Final = 32 * 1024

#: How long ``check`` waits for its write probe before reporting the database stuck.
WRITE_PROBE_SECONDS: Final = 1.0

T = TypeVar("T")


class SqliteEngine:
    """The connections, the writer thread, group commit, the syncer and checkpoints;
    the operations of the backend build on it (see the package)."""

    def __init__(
        self, *, path: Path, clock: Clock, on_events_committed: EventsCommitted | None = None
    ) -> None:
        self.path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="almhookd-writer")
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="almhookd-sync")
        #: held from before SQLite opens the file until it is closed
        self._lock: DatabaseLock | None = None
        #: the WAL file as the syncer holds it open: descriptor, (device, inode)
        self._wal_descriptor: int | None = None
        self._wal_identity: tuple[int, int] | None = None
        # Both used on the writer thread only: ``_db`` commits with synchronous=FULL
        # (webhooks, admin changes), ``_bookkeeping`` with NORMAL (ingest, made durable
        # by the syncer; delivery state). Two connections, so the setting never flips
        # between transactions.
        self._db: sqlite3.Connection | None = None
        self._bookkeeping: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        #: the loop the store was opened on, which the writer and syncer threads settle
        #: ``append`` calls on
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ``append`` calls waiting for a drain on the writer thread, and whether one is
        #: scheduled (both under ``_appends_lock``)
        self._appends: deque[PendingAppend] = deque()
        self._appends_lock = threading.Lock()
        self._drain_scheduled = False
        #: groups committed, waiting for the fsync that acknowledges them, and whether a
        #: sync is scheduled (both under ``_committed_lock``)
        self._committed: list[tuple[list[PendingAppend], list[AppendResult]]] = []
        self._committed_lock = threading.Lock()
        self._sync_scheduled = False
        #: ``append`` futures not yet done (on the loop), and an event set at none
        self._unsettled = 0
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        #: ingest transactions committed by the writer since opening
        self.commits = 0
        #: set by a failed fsync: no ingest is acknowledged any more
        self._sync_failure: StorageError | None = None
        #: write transactions of any kind since opening
        self.writes = 0
        #: (device, inode) of the database file when opened: see ``_check_file``
        self._identity: tuple[int, int] | None = None
        #: the write probe of ``check`` under way (one at a time)
        self._write_probe: asyncio.Future[None] | None = None
        #: called after each ingest commit that stored new events, before its fsync
        #: (wakes the workers)
        self._on_events_committed = on_events_committed

    @classmethod
    async def open(
        cls, path: Path, *, clock: Clock, on_events_committed: EventsCommitted | None = None
    ) -> Self:
        """Open (creating and migrating as needed) the database at ``path``;
        ``on_events_committed`` is called after each ingest commit that stored events."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StorageError(
                f"almhookd needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later; this "
                f"Python uses SQLite {sqlite3.sqlite_version}"
            )
        try:
            create_private_file(path)
        except OSError as error:
            raise StorageError(f"{path}: cannot create the database: {error.strerror}") from None
        lock = DatabaseLock.acquire(path)
        store = cls(path=path, clock=clock, on_events_committed=on_events_committed)
        store._loop = asyncio.get_running_loop()
        store._lock = lock
        store._identity = file_identity(path)
        try:
            await store._run(store._prepare)
            store._reader = await aiosqlite.connect(path, isolation_level=None)
            await store._reader.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as error:
            await store._close_connections()
            raise storage_error(error, path) from None
        except BaseException:
            await store._close_connections()
            raise
        store._checkpointer = asyncio.create_task(
            store._checkpoint_loop(), name="almhookd-store-checkpoint"
        )
        return store

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connect(self, synchronous: str, *, cache_kib: int | None = None) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
            "busy_timeout = 5000",
            f"wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}",
            *([f"cache_size = -{cache_kib}"] if cache_kib else []),
        ):
            db.execute(f"PRAGMA {pragma}")
        return db

    def _prepare(self) -> None:
        db = self._db = self._connect("FULL")
        if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            raise StorageError(f"{self.path}: cannot switch the database to WAL mode")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: database schema version {version} is newer than this almhookd "
                f"supports ({SCHEMA_VERSION}); upgrade almhookd"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            # executescript runs the whole migration, version bump included, in one
            # transaction: a crash leaves the database at the old version, never between.
            db.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\nPRAGMA user_version = {number};\n"
                "COMMIT;"
            )
            log.info("storage.migrated", path=str(self.path), schema_version=number)
        self._bookkeeping = self._connect("NORMAL", cache_kib=BOOKKEEPING_CACHE_KIB)

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """Run ``work`` as one write transaction on the writer thread.

        ``durable`` commits with ``synchronous=FULL`` (on disk before returning); else
        ``NORMAL`` (survives a crash of the process, not a power cut).
        """
        if self._closing and self._db is None:
            raise StorageClosed()
        try:
            return await self._run(lambda: self._transaction(work, durable))
        except sqlite3.Error as error:
            raise storage_error(error, self.path) from None

    def _transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        db = self._db if durable else self._bookkeeping
        if db is None:
            raise StorageClosed()
        # Counted here, on the writer thread only: ``+=`` from two threads can lose one.
        self.writes += 1
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return result

    async def _writer_pragma(self, pragma: str) -> Any:
        """Run ``PRAGMA pragma`` on both writing connections (limits set by tests);
        returns the answer of the one with ``synchronous=FULL``."""

        def run() -> Any:
            if self._db is None or self._bookkeeping is None:
                raise StorageClosed()
            self._bookkeeping.execute(f"PRAGMA {pragma}").fetchall()
            row = self._db.execute(f"PRAGMA {pragma}").fetchone()
            return row[0] if row else None

        return await self._run(run)

    async def ping(self) -> None:
        """An empty write transaction: proves the writer thread and the write lock are
        available (the watchdog's test that the store is not wedged). Fails for good
        after a failed fsync, so that the watchdog has almhookd restarted."""
        if self._sync_failure is not None:
            raise self._sync_failure
        await self._write(lambda db: None, durable=False)

    async def probe_space(self) -> None:
        """A write that needs room: a scratch table holding a few pages, created and
        dropped in one committed transaction. Raises :class:`StorageFull` while the disk
        (or the page limit) has none. An empty transaction writes nothing, so only this
        tells that space came back."""

        def fill_and_free(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE almhookd_space_probe (filler BLOB)")
            db.execute("INSERT INTO almhookd_space_probe VALUES (zeroblob(?))", (_PROBE_BYTES,))
            db.execute("DROP TABLE almhookd_space_probe")

        if self._sync_failure is not None:
            raise self._sync_failure
        await self._write(fill_and_free, durable=False)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def _read(self) -> aiosqlite.Connection:
        if self._reader is None or self._closing:
            raise StorageClosed()
        return self._reader

    async def _fetchall(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        """Run one query on the shared reader, start to finish, in one hop to its thread.

        An ``execute`` and a ``fetchall`` as two hops would leave the statement open in
        between, and with it the read transaction: every coroutine reading meanwhile
        would see that old snapshot, even right after its own commit.
        """
        try:
            return list(await self._read.execute_fetchall(sql, parameters))
        except sqlite3.Error as error:
            raise storage_error(error, self.path) from None

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database from the reader's thread, off the commit path.
        When writes pause, a WAL grown past WAL_SHRINK_BYTES is truncated once; then an
        idle daemon does nothing."""
        checkpointed = self.writes
        idle_checked = True
        while not self._closing:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            if self.writes != checkpointed:
                checkpointed, idle_checked = self.writes, False
                mode = "PASSIVE"
            elif not idle_checked:
                idle_checked = True
                if self._wal_bytes() <= WAL_SHRINK_BYTES:
                    continue
                mode = "TRUNCATE"  # waits for a write that starts meanwhile, briefly
            else:
                continue
            try:
                # Fetched in the same hop: an unfinished statement would keep a snapshot.
                await self._read.execute_fetchall(f"PRAGMA wal_checkpoint({mode})")
            except (sqlite3.Error, StorageClosed, ValueError):
                continue

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store ``events`` durably; returns once they are committed to disk.

        An event whose ``event_id`` is already stored is a duplicate and is not stored
        again; a second copy within the same call counts as a duplicate too.
        """
        if self._closing:
            raise StorageClosed()
        if self._sync_failure is not None:
            raise self._sync_failure
        pending = PendingAppend(events, asyncio.get_running_loop().create_future())
        with self._appends_lock:
            if not self._drain_scheduled:
                try:
                    self._executor.submit(self._drain)
                except RuntimeError:  # the writer thread is shut down
                    raise StorageClosed() from None
                self._drain_scheduled = True
            self._appends.append(pending)
        # Counted down once, when the future is done (answered, or its caller cancelled):
        # ``close()`` waits for none to be left.
        self._unsettled += 1
        self._all_settled.clear()
        pending.done.add_done_callback(self._one_settled)
        return await pending.done

    def _one_settled(self, _: asyncio.Future[AppendResult]) -> None:
        self._unsettled -= 1
        if self._unsettled == 0:
            self._all_settled.set()

    def _check_file(self) -> None:
        """Refuse to go on writing into a database file that was moved away or deleted:
        the open file still takes commits, but a restart would not find them."""
        if self._identity is not None and file_identity(self.path) != self._identity:
            raise StorageError(
                f"{self.path}: the database file was moved or deleted while almhookd runs; "
                "put it back, or restart almhookd to start a new one"
            )

    def _drain(self) -> None:
        """On the writer thread: commit the requests waiting now as one group, then
        schedule another drain behind the other writes if more came meanwhile."""
        with self._appends_lock:
            group: list[PendingAppend] = []
            size = 0
            while self._appends and (not group or size < MAX_GROUP_EVENTS):
                pending = self._appends.popleft()
                group.append(pending)
                size += len(pending.events)
        try:
            if group:
                self._commit_group(group)
        except BaseException as error:  # every waiter must hear of it, or close() hangs
            failure = StorageError(f"{self.path}: {type(error).__name__}: {error}")
            log.error("storage.commit_failed", error=failure.message, requests=len(group))
            self._settle_soon([(group, [])], failure)
        finally:
            with self._appends_lock:
                if self._appends:
                    self._executor.submit(self._drain)
                else:
                    self._drain_scheduled = False

    def _commit_group(self, group: list[PendingAppend]) -> None:
        """On the writer thread: commit one group and hand it to the syncer."""
        now_ms = self._now_ms()
        try:
            results = self._transaction(lambda db: insert_events(db, group, now_ms), False)
        except Exception as error:  # every waiter must hear of the failure
            if len(group) > 1 and not isinstance(error, sqlite3.Error | StorageError):
                # One request's rows broke the transaction (not the storage): commit each
                # request alone, so that only that one fails.
                for pending in group:
                    self._commit_group([pending])
                return
            failure = (
                storage_error(error, self.path)
                if isinstance(error, sqlite3.Error)
                else error
                if isinstance(error, StorageError)
                else StorageError(f"{self.path}: {type(error).__name__}: {error}")
            )
            log.error("storage.commit_failed", error=failure.message, requests=len(group))
            self._settle_soon([(group, [])], failure)
            return
        self.commits += 1
        if self._on_events_committed is not None and any(r.accepted for r in results):
            # At commit, not after the fsync: delivery overlaps it. A delivery may thus
            # beat its 202; after a power cut before the fsync the event is not stored,
            # was never acknowledged, and comes again (a duplicate, never a loss).
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._on_events_committed)
        with self._committed_lock:
            self._committed.append((group, results))
            if not self._sync_scheduled:
                self._sync_scheduled = True
                self._syncer.submit(self._sync)

    def _sync(self) -> None:
        """On the syncer thread: one fsync for every group committed before it starts,
        then their requests settled, acknowledged or told why not."""
        with self._committed_lock:
            groups, self._committed = self._committed, []
        try:
            failure = self._sync_failure or self._fsync_and_check()
        except BaseException as error:  # every waiter must hear of it
            failure = StorageError(f"{self.path}: {type(error).__name__}: {error}")
            log.error("storage.sync_failed", error=failure.message)
        try:
            self._settle_soon(groups, failure)
        finally:
            with self._committed_lock:
                if self._committed:
                    self._syncer.submit(self._sync)
                else:
                    self._sync_scheduled = False

    def _fsync_and_check(self) -> StorageError | None:
        """The fsync that makes the groups durable, and the file check after it: a file
        deleted before the commit took the events into an inode no restart finds. Not
        acknowledged, the producer sends them again."""
        try:
            self._fsync_wal()
        except FileNotFoundError:
            return StorageError(
                f"{self.path}: the write-ahead log is gone; the database file was moved or deleted"
            )
        except OSError as error:
            self._sync_failure = StorageError(
                f"{self.path}: writing the database to disk failed ({error.strerror}); "
                "nothing more is acknowledged until almhookd is restarted"
            )
            log.error("storage.sync_failed", error=self._sync_failure.message)
            return self._sync_failure
        try:
            self._check_file()
        except StorageError as error:
            return error
        return None

    def _settle_soon(
        self,
        groups: list[tuple[list[PendingAppend], list[AppendResult]]],
        failure: StorageError | None,
    ) -> None:
        """From a thread: settle ``groups`` on the loop, with one call for all of them."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._settle, groups, failure)

    def _settle(
        self,
        groups: list[tuple[list[PendingAppend], list[AppendResult]]],
        failure: StorageError | None,
    ) -> None:
        for group, results in groups:
            for index, pending in enumerate(group):
                if pending.done.done():  # cancelled, or already told of a failure
                    continue
                if failure is None:
                    pending.done.set_result(results[index])
                else:
                    pending.done.set_exception(failure)

    def _fsync_wal(self) -> None:
        """fsync the WAL file, whichever descriptor wrote it: its pages are the file's.

        On the syncer thread, through one descriptor kept open for the file's life:
        Linux reports a write-back error once to each descriptor open when it happened,
        so a descriptor opened after another one was told (SQLite's own fsync at a
        checkpoint) would find nothing, and the lost pages would be acknowledged. SQLite
        truncates and reuses the WAL, never replaces it while open; a new file at the
        path (another inode) is opened anew.
        """
        path = f"{self.path}-wal"
        found = os.stat(path)  # FileNotFoundError: the database was moved or deleted
        if self._wal_descriptor is None or self._wal_identity != (found.st_dev, found.st_ino):
            self._close_wal()
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(descriptor)
            self._wal_descriptor = descriptor
            self._wal_identity = (opened.st_dev, opened.st_ino)
        os.fsync(self._wal_descriptor)

    def _close_wal(self) -> None:
        if self._wal_descriptor is not None:
            os.close(self._wal_descriptor)
            self._wal_descriptor = self._wal_identity = None

    async def check(self) -> None:
        """Raise :class:`StorageError` unless the database answers, the writer runs, the
        file is still where it was opened, and an empty write transaction gets through
        within ``WRITE_PROBE_SECONDS``.

        Reads succeed on a database another process holds locked; only a write shows it.
        The probe left running after a timeout is shared by later calls, so polling never
        queues more than one probe on the writer thread.
        """
        if self._closing:
            raise StorageClosed()
        if self._sync_failure is not None:
            raise self._sync_failure
        await self._fetchall("SELECT count(*) FROM sqlite_master")
        self._check_file()
        if self._write_probe is None or self._write_probe.done():
            self._write_probe = asyncio.ensure_future(self.ping())
        try:
            await asyncio.wait_for(asyncio.shield(self._write_probe), WRITE_PROBE_SECONDS)
        except TimeoutError:
            raise StorageError(
                f"{self.path}: the database takes no writes (locked by another process?)"
            ) from None

    async def close(self) -> None:
        """Commit what is queued, then close the database. Safe to call more than once."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._checkpointer is not None:
                self._checkpointer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._checkpointer
            # What was appended is committed, on disk and answered before closing.
            await self._all_settled.wait()
            await self._close_connections()
        finally:
            self._closed.set()

    async def _close_connections(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._reader.close()
            self._reader = None

        def close_writer() -> None:
            for connection in (self._bookkeeping, self._db):
                if connection is not None:
                    with contextlib.suppress(sqlite3.Error):
                        connection.close()
            self._db = self._bookkeeping = None

        try:
            await self._run(close_writer)
            self._executor.shutdown(wait=True)
            self._syncer.shutdown(wait=True)
            self._close_wal()
        finally:
            if self._lock is not None:  # last: the database is closed, WAL removed
                self._lock.release()

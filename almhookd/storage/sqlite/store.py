"""The SQLite outbox: the one module that talks to the database.

Two connections on a WAL database. Writes go to a stdlib ``sqlite3`` connection owned
by one dedicated thread: each write transaction is one function run there, start to
commit, so it costs one hop from the event loop and transactions never interleave.
Reads go through an aiosqlite connection, which sees only committed data. The reader's
thread also runs WAL checkpoints, so commits never pay for them.

Ingest goes through a single writer task that commits whatever requests are waiting in
one transaction (group commit). A request is acknowledged only once its transaction is
on disk, through an fsync of the write-ahead log on a third thread, after the commit:
the write lock is not held through the fsync, so delivery bookkeeping and the next
ingest groups commit while it runs, and one fsync covers every commit before it. A
failed fsync stops all ingest until a restart (the kernel may have dropped the pages it
could not write). Delivery bookkeeping commits with ``synchronous=NORMAL`` and is never
waited for on disk: in WAL mode that survives a crash of the process; a power cut may
lose the last bookkeeping commits, which only means a batch is sent again (a duplicate
the subscriber de-duplicates), never that an event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import aiosqlite
import structlog

from almhookd.config import Secret
from almhookd.domain.batching import Claim, EventColumns, RequestBatch, pack, request_batch
from almhookd.domain.events import NewEvent
from almhookd.domain.policy import Schedule
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import NewWebhook, SigningSecret, Webhook, WebhookChanges
from almhookd.errors import (
    DatabaseInUse,
    StorageClosed,
    StorageError,
    StorageFull,
    WebhookLimitReached,
)
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted
from almhookd.storage.sqlite.migrations import MIGRATIONS, SCHEMA_VERSION
from almhookd.storage.values import (
    RESPONSE_EXCERPT_CHARS,
    AppendResult,
    Attempt,
    DeliveryState,
    ExpiredCount,
    StoredEvent,
)

log = structlog.get_logger("almhookd.store")

#: Upper bound on the events one group commit writes, so one transaction stays short.
MAX_GROUP_EVENTS: Final = 20_000
#: Bytes the space probe writes: a few pages, as a small ingest request would need.
_PROBE_BYTES: Final = 16 * 1024
#: Rows one pruning statement deletes, so pruning never holds the writer for long.
PRUNE_CHUNK: Final = 5_000
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

T = TypeVar("T")


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


#: Webhooks with their subscriptions and signing secrets as JSON arrays: one statement,
#: so one snapshot, whether run on the reader or inside a write transaction.
_SELECT_WEBHOOKS: Final = (
    "SELECT w.id, w.name, w.description, w.target_url, w.auth_type, w.auth_username,"
    " w.auth_password, w.contact_email, w.status, w.disabled_reason, w.created_at_ms,"
    " w.updated_at_ms, w.consecutive_failures, w.failing_since_ms, w.next_attempt_at_ms,"
    " w.last_success_at_ms, w.last_error, w.last_reminder_at_ms,"
    " (SELECT json_group_array(e.event_name) FROM webhook_events AS e"
    " WHERE e.webhook_id = w.id),"
    " (SELECT json_group_array(json_array(s.secret, s.created_at_ms, s.expires_at_ms))"
    " FROM signing_secrets AS s WHERE s.webhook_id = w.id)"
    " FROM webhooks AS w"
)


def _webhook_from_row(row: Sequence[Any]) -> Webhook:
    """A :class:`Webhook` from one row of :data:`_SELECT_WEBHOOKS`."""
    signing = sorted(json.loads(row[19]), key=lambda secret: secret[1])
    return Webhook(
        id=row[0],
        name=row[1],
        description=row[2],
        target_url=row[3],
        auth_type=row[4],
        auth_username=row[5],
        auth_password=Secret(row[6]) if row[6] is not None else None,
        contact_email=row[7],
        status=row[8],
        disabled_reason=row[9],
        created_at_ms=row[10],
        updated_at_ms=row[11],
        schedule=Schedule(
            consecutive_failures=row[12],
            failing_since=_seconds(row[13]),
            next_attempt_at=_seconds(row[14]),
            last_success_at=_seconds(row[15]),
            last_error=row[16],
            last_reminder_at=_seconds(row[17]),
        ),
        events=frozenset(json.loads(row[18])),
        secrets=tuple(
            SigningSecret(secret=Secret(secret), created_at_ms=created, expires_at_ms=expires)
            for secret, created, expires in signing
        ),
    )


def _written_webhook(db: sqlite3.Connection, webhook_id: str) -> Webhook:
    """The webhook as the write transaction that changed it left it: read inside that
    transaction, so the caller never depends on the reader catching up."""
    row = db.execute(_SELECT_WEBHOOKS + " WHERE w.id = ?", (webhook_id,)).fetchone()
    return _webhook_from_row(row)


class _PendingAppend(NamedTuple):
    """One ``append`` call waiting for the group commit."""

    events: Sequence[NewEvent]
    done: asyncio.Future[AppendResult]


def event_key(event_id: str) -> int:
    """The 64-bit key under which an event id is indexed (stable across processes)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Rows per multi-row INSERT: one SQLite call (and one GIL hand-over) per chunk.
INSERT_CHUNK: Final = 200


def _insert_many(
    db: sqlite3.Connection, head: str, placeholders: str, rows: Sequence[Sequence[object]]
) -> None:
    """Insert ``rows`` with multi-row ``VALUES`` lists rather than ``executemany``.

    ``executemany`` gives up the GIL inside every row's step and must win it back from
    the busy event loop each time; chunks of rows make that a few hand-overs per commit.
    """
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        db.execute(
            head + ", ".join([placeholders] * len(chunk)),
            [value for row in chunk for value in row],
        )


#: The active webhooks subscribed to some event names (parameter: a JSON array of names).
SUBSCRIBERS_SQL: Final = (
    "SELECT s.event_name, s.webhook_id FROM webhook_events AS s"
    " JOIN webhooks AS w ON w.id = s.webhook_id"
    " WHERE s.event_name IN (SELECT value FROM json_each(?)) AND w.status = 'active'"
)


def _insert_events(
    db: sqlite3.Connection, group: list[_PendingAppend], now_ms: int
) -> list[AppendResult]:
    """The group commit's transaction body (on the writer thread).

    Stores the new events and, in the same transaction, fans them out: every active
    webhook subscribed to an event's name gets a pending delivery, real-time events due
    at once, non-real-time ones held (``due_at_ms`` NULL) for the batch scheduler.
    """
    keys = {event.event_id: event_key(event.event_id) for p in group for event in p.events}
    known = {
        row[0]
        for row in db.execute(
            "SELECT event_id FROM events WHERE event_key IN (SELECT value FROM json_each(?))",
            (json.dumps(list(keys.values())),),
        )
    }
    subscribers: dict[str, list[str]] = {}
    # The group's names only: a webhook subscribed to the whole catalogue is 27 rows,
    # and each row read hands the GIL to this thread and back.
    event_names = sorted({event.event_name for p in group for event in p.events})
    for event_name, webhook_id in db.execute(SUBSCRIBERS_SQL, (json.dumps(event_names),)):
        subscribers.setdefault(event_name, []).append(webhook_id)
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    rows: list[tuple[object, ...]] = []
    deliveries: list[tuple[str, int, int | None]] = []
    results = []
    for pending in group:
        names: list[str] = []
        for event in pending.events:
            if event.event_id in known:
                continue
            known.add(event.event_id)
            names.append(event.event_name)
            seq += 1
            rows.append(
                (
                    seq,
                    keys[event.event_id],
                    event.event_id,
                    event.event_name,
                    event.account_id,
                    event.timestamp_ms,
                    int(event.realtime),
                    now_ms,
                    event.body,
                )
            )
            due = now_ms if event.realtime else None
            deliveries.extend(
                (webhook, seq, due) for webhook in subscribers.get(event.event_name, ())
            )
        results.append(
            AppendResult(
                accepted=len(names),
                duplicates=len(pending.events) - len(names),
                accepted_names=tuple(names),
            )
        )
    _insert_many(
        db,
        "INSERT INTO events (seq, event_key, event_id, event_name, account_id,"
        " timestamp_ms, realtime, ingested_at_ms, body) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    _insert_many(
        db,
        "INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms) VALUES ",
        "(?, ?, 'pending', ?)",
        deliveries,
    )
    return results


#: A webhook's outstanding deliveries (two parameters: its id twice), through the two
#: partial indexes that together hold every pending delivery.
OUTSTANDING_SQL: Final = (
    "SELECT event_seq, due_at_ms FROM deliveries INDEXED BY deliveries_ready"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL"
    " UNION ALL SELECT event_seq, due_at_ms FROM deliveries INDEXED BY deliveries_held"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NULL"
)

#: The next due deliveries after a given event (parameters: webhook id, now, retained
#: since, after seq, limit): nothing above the seq is in a batch being sent.
CLAIM_SQL: Final = (
    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body,"
    " e.realtime FROM deliveries AS d INDEXED BY deliveries_ready"
    " JOIN events AS e ON e.seq = d.event_seq"
    " WHERE d.webhook_id = ? AND d.state = 'pending' AND d.due_at_ms IS NOT NULL"
    " AND d.due_at_ms <= ? AND e.ingested_at_ms >= ? AND d.event_seq > ?"
    " ORDER BY d.event_seq LIMIT ?"
)
#: The same, skipping those in batches being sent (the after seq is 0): for when some
#: below the batches being sent are pending again (a replay, a release, a dissolved
#: batch). It walks every event being sent, so it is the exception.
CLAIM_AROUND_SENDING_SQL: Final = CLAIM_SQL.replace(
    " ORDER BY",
    " AND d.event_seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = ?) ORDER BY",
)
#: The last event of the batches being sent (0: none), how many events they hold, and
#: how many pending deliveries are due up to that last one (parameters: the webhook id,
#: twice). The two counts differ when some below it are pending outside the batches
#: (after a replay, a release, a dissolved batch). Index only, no bodies.
SENDING_HIGH_WATER_SQL: Final = (
    "SELECT high, sending, (SELECT count(*) FROM deliveries INDEXED BY deliveries_ready"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL"
    " AND event_seq <= high)"
    " FROM (SELECT coalesce(max(json_extract(event_seqs, '$[#-1]')), 0) AS high,"
    " coalesce(sum(json_array_length(event_seqs)), 0) AS sending"
    " FROM request_batches INDEXED BY request_batches_sending"
    " WHERE webhook_id = ? AND state = 'sending')"
)


def _claim_batches(db: sqlite3.Connection, webhook_id: str, claim: Claim) -> list[RequestBatch]:
    """Up to ``claim.batches`` batches, in order, and no more once they hold
    ``claim.total_bytes``, packed by :func:`_pack` from one query and recorded as being
    sent by one statement.

    Claims usually continue after the last event being sent, without walking the batches
    in flight. Only while a delivery below it is pending outside them (after a replay, a
    release, a dissolved batch) does a claim skip them one by one. A claim takes every
    free due delivery up to its own last event, so the next one continues after that.
    """
    if claim.batches <= 0:
        return []
    high_water, sending, ready_below = db.execute(
        SENDING_HIGH_WATER_SQL, (webhook_id, webhook_id)
    ).fetchone()
    if ready_below == sending:
        sql = CLAIM_SQL
        parameters: tuple[object, ...] = (
            webhook_id, claim.now_ms, claim.retained_since_ms, high_water
        )  # fmt: skip
    else:
        sql = CLAIM_AROUND_SENDING_SQL
        parameters = (webhook_id, claim.now_ms, claim.retained_since_ms, 0, webhook_id)
    # One statement for every batch: each further SQLite call would hand the GIL back
    # and forth with the busy event loop. The limit is a bound; rows are read lazily.
    limit = claim.batches * max(claim.max_events, claim.max_batch_events)
    cursor = db.execute(sql, (*parameters, limit))
    try:
        packed = list(pack(cursor.fetchmany, claim))
    finally:
        cursor.close()
    batches = [
        request_batch("msg_" + uuid.uuid4().hex, webhook_id, events, created_at_ms=claim.now_ms)
        for events in packed
    ]
    _insert_many(
        db,
        "INSERT INTO request_batches (id, webhook_id, created_at_ms, state, event_seqs) VALUES ",
        "(?, ?, ?, 'sending', ?)",
        [(batch.id, webhook_id, claim.now_ms, json.dumps(batch.event_seqs)) for batch in batches],
    )
    return batches


#: Acknowledged deliveries (parameters: delivered at, a JSON array of [event_seq,
#: batch_id] pairs, the webhook id), pending ones only: some may have expired in flight.
#: MATERIALIZED makes SQLite walk the pairs and look each delivery up by its primary key;
#: without it, it may walk the webhook's every delivery and search the pairs for each.
DELIVERED_SQL: Final = (
    "WITH acked (event_seq, batch_id) AS MATERIALIZED"
    " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))"
    " UPDATE deliveries SET state = 'delivered', delivered_at_ms = ?1,"
    " attempts = attempts + 1, batch_id = acked.batch_id FROM acked"
    " WHERE deliveries.webhook_id = ?3 AND deliveries.state = 'pending'"
    " AND deliveries.event_seq = acked.event_seq"
)


def _fail(group: Sequence[_PendingAppend], failure: StorageError) -> None:
    """Tell every request of a group that it was not stored (or not durably)."""
    for pending in group:
        if not pending.done.done():
            pending.done.set_exception(failure)


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


def lock_path(database: Path) -> Path:
    """The file whose lock marks a database as in use: ``<database>.lock`` beside it."""
    return database.with_name(database.name + ".lock")


class _DatabaseLock:
    """An exclusive ``flock`` on :func:`lock_path`, held while a store is open, so that
    two almhookd never write to one database. The kernel drops it with the process, even
    after ``kill -9``. The file stays: removing it would let a third process lock a new
    file while a second one still holds the old one. It holds the holder's PID, for the
    message of the next one and for an operator."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, database: Path) -> _DatabaseLock:
        path = lock_path(database)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StorageError(f"{path}: cannot create the lock file: {error.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Empty if the holder has not written its PID yet.
                holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
                raise DatabaseInUse(
                    f"the database {database} is in use by another almhookd"
                    f" (pid {holder if holder.isdigit() else 'unknown'})"
                ) from None
            os.fchmod(descriptor, 0o600)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            os.close(descriptor)
            raise StorageError(f"{path}: cannot lock the database: {error.strerror}") from None
        except BaseException:
            os.close(descriptor)
            raise
        return cls(descriptor)

    def release(self) -> None:
        """Drop the lock (closing its only descriptor does). Safe to call more than once."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class Store:
    """Durable storage of events and delivery state."""

    def __init__(
        self, *, path: Path, clock: Clock, on_events_committed: EventsCommitted | None = None
    ) -> None:
        self.path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="almhookd-writer")
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="almhookd-sync")
        #: held from before SQLite opens the file until it is closed
        self._lock: _DatabaseLock | None = None
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
        self._queue: asyncio.Queue[_PendingAppend | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        #: ingest transactions committed by the writer since opening
        self.commits = 0
        #: ingest transactions known to be on disk (the WAL synced after them)
        self._synced = 0
        self._sync_lock = asyncio.Lock()
        #: set by a failed fsync: no ingest is acknowledged any more
        self._sync_failure: StorageError | None = None
        #: groups committed, waiting for the fsync that acknowledges them
        self._acknowledging: set[asyncio.Task[None]] = set()
        #: write transactions of any kind since opening
        self.writes = 0
        #: called after each ingest commit that stored new events, before its fsync
        #: (wakes the workers)
        self._on_events_committed = on_events_committed

    @classmethod
    async def open(
        cls, path: Path, *, clock: Clock, on_events_committed: EventsCommitted | None = None
    ) -> Store:
        """Open (creating and migrating as needed) the database at ``path``;
        ``on_events_committed`` is called after each ingest commit that stored events."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StorageError(
                f"almhookd needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later; this "
                f"Python uses SQLite {sqlite3.sqlite_version}"
            )
        try:
            _create_private_file(path)
        except OSError as error:
            raise StorageError(f"{path}: cannot create the database: {error.strerror}") from None
        lock = _DatabaseLock.acquire(path)
        store = cls(path=path, clock=clock, on_events_committed=on_events_committed)
        store._lock = lock
        try:
            await store._run(store._prepare)
            store._reader = await aiosqlite.connect(path, isolation_level=None)
            await store._reader.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as error:
            await store._close_connections()
            raise _storage_error(error, path) from None
        except BaseException:
            await store._close_connections()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="almhookd-store-writer")
        store._checkpointer = asyncio.create_task(
            store._checkpoint_loop(), name="almhookd-store-checkpoint"
        )
        return store

    # --- the writer thread -------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
            "busy_timeout = 5000",
            f"wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}",
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
            log.info("store.migrated", path=str(self.path), schema_version=number)
        self._bookkeeping = self._connect("NORMAL")

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """Run ``work`` as one write transaction on the writer thread.

        ``durable`` commits with ``synchronous=FULL`` (on disk before returning); else
        ``NORMAL`` (survives a crash of the process, not a power cut).
        """
        if self._closing and self._writer is not None and self._writer.done():
            raise StorageClosed()
        try:
            return await self._run(lambda: self._transaction(work, durable))
        except sqlite3.Error as error:
            raise _storage_error(error, self.path) from None
        finally:
            self.writes += 1

    def _transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        db = self._db if durable else self._bookkeeping
        if db is None:
            raise StorageClosed()
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

    # --- the reader --------------------------------------------------------------------

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
            raise _storage_error(error, self.path) from None

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

    # --- ingest ----------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store ``events`` durably; returns once they are committed to disk.

        An event whose ``event_id`` is already stored is a duplicate and is not stored
        again; a second copy within the same call counts as a duplicate too.
        """
        if self._closing:
            raise StorageClosed()
        if self._sync_failure is not None:
            raise self._sync_failure
        pending = _PendingAppend(events, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        # The writer answers even when the caller is cancelled; ``done()`` is checked.
        return await pending.done

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
        """Commit one group; it is acknowledged in the background, once on disk, while the
        next group commits."""
        now_ms = self._now_ms()
        try:
            results = await self._write(lambda db: _insert_events(db, group, now_ms), durable=False)
        except Exception as error:  # every waiter must hear of the failure
            if len(group) > 1 and not isinstance(error, StorageError):
                # One request's rows broke the transaction (not the storage): commit each
                # request alone, so that only that one fails.
                for pending in group:
                    await self._commit_group([pending])
                return
            failure = (
                error
                if isinstance(error, StorageError)
                else StorageError(f"{self.path}: {type(error).__name__}: {error}")
            )
            log.error("store.commit_failed", error=failure.message, requests=len(group))
            _fail(group, failure)
            return
        self.commits += 1
        if self._on_events_committed is not None and any(r.accepted for r in results):
            # At commit, not after the fsync: delivery overlaps it. A delivery may thus
            # beat its 202; after a power cut before the fsync the event is not stored,
            # was never acknowledged, and comes again (a duplicate, never a loss).
            self._on_events_committed()
        task = asyncio.create_task(self._acknowledge(group, results, self.commits))
        self._acknowledging.add(task)
        task.add_done_callback(self._acknowledging.discard)

    async def _acknowledge(
        self, group: list[_PendingAppend], results: list[AppendResult], commit: int
    ) -> None:
        try:
            await self._sync_through(commit)
        except StorageError as failure:
            _fail(group, failure)
            return
        for pending, result in zip(group, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    async def _sync_through(self, commit: int) -> None:
        """Return once ingest commit number ``commit`` is on disk. One fsync at a time;
        each covers every commit made before it starts, so waiters share it."""
        async with self._sync_lock:
            if self._sync_failure is not None:
                raise self._sync_failure
            if self._synced >= commit:
                return
            through = self.commits  # all of these are in the WAL already
            try:
                await asyncio.get_running_loop().run_in_executor(self._syncer, self._fsync_wal)
            except FileNotFoundError:
                raise StorageError(
                    f"{self.path}: the write-ahead log is gone; the database file was moved "
                    "or deleted"
                ) from None
            except OSError as error:
                self._sync_failure = StorageError(
                    f"{self.path}: writing the database to disk failed ({error.strerror}); "
                    "nothing more is acknowledged until almhookd is restarted"
                )
                log.error("store.sync_failed", error=self._sync_failure.message)
                raise self._sync_failure from None
            self._synced = through

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

    # --- reads -----------------------------------------------------------------------

    async def get_event(self, event_id: str) -> StoredEvent | None:
        # The event and its deliveries in one statement: one snapshot, one hop.
        rows = await self._fetchall(
            "SELECT e.seq, e.event_id, e.event_name, e.account_id, e.timestamp_ms,"
            " e.realtime, e.ingested_at_ms, e.body, (SELECT json_group_array(json_array("
            "d.webhook_id, d.state, d.attempts, d.batch_id, d.delivered_at_ms))"
            " FROM delivery_states AS d WHERE d.event_seq = e.seq)"
            " FROM events AS e WHERE e.event_key = ? AND e.event_id = ?",
            (event_key(event_id), event_id),
        )
        if not rows:
            return None
        row = rows[0]
        deliveries = tuple(
            DeliveryState(
                webhook_id=d[0], state=d[1], attempts=d[2], batch_id=d[3], delivered_at_ms=d[4]
            )
            for d in sorted(json.loads(row[8]), key=lambda delivery: str(delivery[0]))
        )
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
        rows = await self._fetchall("SELECT count(*) FROM events")
        return int(rows[0][0])

    async def check(self) -> None:
        """Raise :class:`StorageError` unless the database answers and the writer runs."""
        if self._closing:
            raise StorageClosed()
        if self._sync_failure is not None:
            raise self._sync_failure
        if self._writer is None or self._writer.done():
            raise StorageError(f"{self.path}: the store writer is not running")
        await self._fetchall("SELECT count(*) FROM sqlite_master")

    # --- webhooks --------------------------------------------------------------------

    async def create_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        """Store a webhook; a ``signature`` webhook gets its first signing secret.

        With ``max_webhooks``, raises :class:`WebhookLimitReached` when that many exist.
        The count is taken inside the transaction that inserts (the write lock held), so
        parallel creates cannot all pass it. The webhook returned is read in that same
        transaction.
        """
        webhook_id = "wh_" + secrets.token_hex(8)
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> Webhook:
            if max_webhooks is not None:
                existing = db.execute("SELECT count(*) FROM webhooks").fetchone()[0]
                if existing >= max_webhooks:
                    raise WebhookLimitReached(max_webhooks)
            db.execute(
                "INSERT INTO webhooks (id, name, description, target_url, auth_type,"
                " auth_username, auth_password, contact_email, status, created_at_ms,"
                " updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    webhook_id,
                    new.name,
                    new.description,
                    new.target_url,
                    new.auth_type,
                    new.auth_username,
                    new.auth_password.reveal() if new.auth_password else None,
                    new.contact_email,
                    "active" if new.active else "inactive",
                    now_ms,
                    now_ms,
                ),
            )
            db.executemany(
                "INSERT INTO webhook_events (event_name, webhook_id) VALUES (?, ?)",
                [(name, webhook_id) for name in sorted(new.events)],
            )
            if new.auth_type == "signature":
                db.execute(
                    "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms)"
                    " VALUES (?, ?, ?)",
                    (webhook_id, generate_secret(), now_ms),
                )
            return _written_webhook(db, webhook_id)

        return await self._write(work, durable=True)

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first: one statement, so one snapshot of all of them."""
        rows = await self._fetchall(_SELECT_WEBHOOKS + " ORDER BY w.created_at_ms, w.id")
        return [_webhook_from_row(row) for row in rows]

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = await self._fetchall(_SELECT_WEBHOOKS + " WHERE w.id = ?", (webhook_id,))
        return _webhook_from_row(rows[0]) if rows else None

    async def set_webhook_status(
        self, webhook_id: str, status: str, reason: str | None = None
    ) -> None:
        """Archive (``inactive``), disable (``disabled``, with a reason) or re-enable.

        Re-enabling clears the failure schedule, so delivery resumes at once.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhooks SET status = ?, disabled_reason = ?, updated_at_ms = ?"
                " WHERE id = ?",
                (status, reason, now_ms, webhook_id),
            )
            if status == "active":
                db.execute(
                    "UPDATE webhooks SET consecutive_failures = 0, failing_since_ms = NULL,"
                    " next_attempt_at_ms = NULL, last_reminder_at_ms = NULL WHERE id = ?",
                    (webhook_id,),
                )

        await self._write(work, durable=True)

    async def delete_webhook(self, webhook_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount > 0

        return await self._write(work, durable=True)

    async def count_webhooks(self) -> int:
        rows = await self._fetchall("SELECT count(*) FROM webhooks")
        return int(rows[0][0])

    async def name_taken(self, name: str, *, except_id: str | None = None) -> str | None:
        """The id of another webhook with this name, if any."""
        rows = await self._fetchall(
            "SELECT id FROM webhooks WHERE name = ? AND id != ?", (name, except_id or "")
        )
        return str(rows[0][0]) if rows else None

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        """Apply a ``PATCH``; returns the webhook as changed (read in the same
        transaction), or ``None`` when there is no such webhook.

        ``active: false`` archives (``inactive``); ``active: true`` re-enables an archived
        or disabled webhook and clears its failure schedule. Switching to signature auth
        makes a secret when the webhook has none.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> Webhook | None:
            if db.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone() is None:
                return None
            columns: dict[str, object] = {"updated_at_ms": now_ms}
            for column, value in (
                ("name", changes.name),
                ("description", changes.description),
                ("target_url", changes.target_url),
                ("contact_email", changes.contact_email),
            ):
                if value is not None:
                    columns[column] = value
            if changes.auth_type is not None:
                columns["auth_type"] = changes.auth_type
                basic = changes.auth_type == "basic"
                columns["auth_username"] = changes.auth_username if basic else None
                password = (
                    changes.auth_password.reveal() if basic and changes.auth_password else None
                )
                columns["auth_password"] = password
            if changes.active is not None:
                columns["status"] = "active" if changes.active else "inactive"
                columns["disabled_reason"] = None
                if changes.active:
                    columns.update(
                        consecutive_failures=0,
                        failing_since_ms=None,
                        next_attempt_at_ms=None,
                        last_reminder_at_ms=None,
                    )
            assignments = ", ".join(f"{column} = ?" for column in columns)
            db.execute(
                f"UPDATE webhooks SET {assignments} WHERE id = ?",  # noqa: S608 - fixed names
                [*columns.values(), webhook_id],
            )
            if changes.events is not None:
                db.execute("DELETE FROM webhook_events WHERE webhook_id = ?", (webhook_id,))
                db.executemany(
                    "INSERT INTO webhook_events (event_name, webhook_id) VALUES (?, ?)",
                    [(name, webhook_id) for name in sorted(changes.events)],
                )
            if changes.auth_type == "signature":
                has_secret = db.execute(
                    "SELECT 1 FROM signing_secrets WHERE webhook_id = ? AND expires_at_ms IS NULL",
                    (webhook_id,),
                ).fetchone()
                if has_secret is None:
                    db.execute(
                        "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms)"
                        " VALUES (?, ?, ?)",
                        (webhook_id, generate_secret(), now_ms),
                    )
            return _written_webhook(db, webhook_id)

        return await self._write(work, durable=True)

    async def rotate_secret(self, webhook_id: str, *, grace_ms: int) -> SigningSecret:
        """A new signing secret; the ones in force keep signing for ``grace_ms``."""
        now_ms = self._now_ms()
        secret = generate_secret()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE signing_secrets SET expires_at_ms = ? WHERE webhook_id = ?"
                " AND (expires_at_ms IS NULL OR expires_at_ms > ?)",
                (now_ms + grace_ms, webhook_id, now_ms + grace_ms),
            )
            # A second rotation within a millisecond must still get its own row.
            created = max(
                now_ms,
                1
                + (
                    db.execute(
                        "SELECT coalesce(max(created_at_ms), 0) FROM signing_secrets"
                        " WHERE webhook_id = ?",
                        (webhook_id,),
                    ).fetchone()[0]
                ),
            )
            db.execute(
                "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms) VALUES (?, ?, ?)",
                (webhook_id, secret, created),
            )
            db.execute(
                "DELETE FROM signing_secrets WHERE webhook_id = ? AND expires_at_ms <= ?",
                (webhook_id, now_ms),
            )

        await self._write(work, durable=True)
        return SigningSecret(secret=Secret(secret), created_at_ms=now_ms)

    async def deliveries(
        self, webhook_id: str, *, state: str | None, limit: int, after_seq: int
    ) -> list[dict[str, Any]]:
        """Per-event delivery state in ingest order, after the cursor ``after_seq``."""
        rows = await self._fetchall(
            "SELECT d.event_seq, e.event_id, e.event_name, e.ingested_at_ms, d.state,"
            " d.attempts, d.batch_id, d.delivered_at_ms, d.due_at_ms"
            " FROM delivery_states AS d JOIN events AS e ON e.seq = d.event_seq"
            " WHERE d.webhook_id = ? AND d.event_seq > ? AND (? IS NULL OR d.state = ?)"
            " ORDER BY d.event_seq LIMIT ?",
            (webhook_id, after_seq, state, state, limit),
        )
        keys = (
            "seq",
            "eventId",
            "eventName",
            "ingestedAt",
            "state",
            "attempts",
            "batchId",
            "deliveredAt",
            "dueAt",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def replay(
        self,
        webhook_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since_ms: int | None = None,
        retained_since_ms: int,
        now_ms: int,
    ) -> int:
        """Queue retained events again for one webhook (by ids, or ingested since a time).

        Events of names the webhook subscribes to only; ones in a request being sent now
        are left alone. Returns how many deliveries were queued.
        """
        if event_ids is not None:
            selection = (
                "SELECT e.seq FROM events AS e WHERE e.event_key IN"
                " (SELECT value FROM json_each(?)) AND e.event_id IN"
                " (SELECT value FROM json_each(?))"
            )
            parameters: list[object] = [
                json.dumps([event_key(i) for i in event_ids]),
                json.dumps(list(event_ids)),
            ]
        else:
            selection = "SELECT e.seq FROM events AS e WHERE e.ingested_at_ms >= ?"
            parameters = [since_ms or 0]
        subscribed = (
            " AND e.ingested_at_ms >= ? AND e.event_name IN"
            " (SELECT event_name FROM webhook_events WHERE webhook_id = ?)"
        )

        # One statement for every event: a delivery row that exists is queued again
        # (unless its event is in a request being sent now), a missing one is inserted.
        # The WHERE clause also tells SQLite's parser that ON CONFLICT is the upsert's,
        # not a join constraint.
        upsert = (
            "INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms)"  # noqa: S608 - fixed SQL
            f" SELECT ?, e.seq, 'pending', ? FROM ({selection + subscribed}) AS e"
            " WHERE e.seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = ?)"
            " ON CONFLICT (webhook_id, event_seq) DO UPDATE SET state = 'pending',"
            " due_at_ms = excluded.due_at_ms, batch_id = NULL"
        )

        def work(db: sqlite3.Connection) -> int:
            return int(
                db.execute(
                    upsert,
                    [
                        webhook_id,
                        now_ms,
                        *parameters,
                        retained_since_ms,
                        webhook_id,
                        webhook_id,
                    ],
                ).rowcount
            )

        return await self._write(work, durable=True)

    # --- delivery --------------------------------------------------------------------

    async def in_flight_batches(self, webhook_id: str) -> list[RequestBatch]:
        """The batches recorded as being sent, oldest first (after a crash: to send
        again, same ids, before anything new is claimed)."""

        def work(db: sqlite3.Connection) -> list[RequestBatch]:
            batches = []
            for batch_id, created_at_ms, attempts, seqs in db.execute(
                "SELECT id, created_at_ms, attempts, event_seqs FROM request_batches"
                " INDEXED BY request_batches_sending WHERE webhook_id = ? AND state = 'sending'"
                " ORDER BY rowid",
                (webhook_id,),
            ).fetchall():
                events = db.execute(
                    "SELECT d.event_seq, e.event_id, e.account_id, e.ingested_at_ms, e.body"
                    " FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
                    " WHERE d.webhook_id = ? AND d.event_seq IN (SELECT value FROM json_each(?))"
                    " AND d.state = 'pending' ORDER BY d.event_seq",
                    (webhook_id, seqs),
                ).fetchall()
                if not events:
                    db.execute(
                        "UPDATE request_batches SET state = 'expired' WHERE id = ?", (batch_id,)
                    )
                    continue
                batches.append(
                    request_batch(
                        batch_id,
                        webhook_id,
                        EventColumns(*zip(*events, strict=True)),
                        created_at_ms=created_at_ms,
                        attempts=attempts,
                    )
                )
            return batches

        return await self._write(work, durable=False)

    async def claim_batches(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        """Pack the next due deliveries into up to ``claim.batches`` request batches,
        each recorded before it is sent.

        In ingest order, events of one account and one kind only: real-time events up to
        ``claim.max_events``, released non-real-time events up to
        ``claim.max_batch_events``, and about ``claim.max_bytes`` (one event always
        fits). Events older than ``claim.retained_since_ms`` are left for expiry.
        """
        return await self._write(lambda db: _claim_batches(db, webhook_id, claim), durable=False)

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
    ) -> list[RequestBatch]:
        """Log attempts, in order; mark acknowledged batches delivered; store the
        webhook's schedule after them.

        With ``claim_next``, the next batches are claimed in the same transaction (one
        trip to the writer for several requests while a backlog drains) and returned.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> list[RequestBatch]:
            # A handful of statements whatever the number of attempts: each SQLite call
            # hands the GIL to this thread and back, and the event loop is busy.
            _insert_many(
                db,
                "INSERT INTO attempts (webhook_id, batch_id, started_at_ms, duration_ms,"
                " event_count, status, error, response_body) VALUES ",
                "(?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        webhook_id,
                        attempt.batch.id,
                        attempt.started_at_ms,
                        attempt.outcome.duration_ms,
                        len(attempt.batch.event_seqs),
                        attempt.outcome.status,
                        attempt.outcome.error,
                        attempt.outcome.response_body[:RESPONSE_EXCERPT_CHARS],
                    )
                    for attempt in attempts
                ],
            )
            # A batch appears once per record: a failed attempt is recorded at once.
            delivered = [a.batch for a in attempts if a.outcome.ok]
            failed = [a.batch for a in attempts if not a.outcome.ok]
            db.execute(
                "UPDATE request_batches SET attempts = attempts + 1, state = CASE WHEN id IN"
                " (SELECT value FROM json_each(?1)) THEN 'delivered' ELSE state END"
                " WHERE id IN (SELECT value FROM json_each(?2))",
                (
                    json.dumps([batch.id for batch in delivered]),
                    json.dumps([attempt.batch.id for attempt in attempts]),
                ),
            )
            if delivered:
                db.execute(
                    DELIVERED_SQL,
                    (
                        now_ms,
                        json.dumps([[s, b.id] for b in delivered for s in b.event_seqs]),
                        webhook_id,
                    ),
                )
            if failed:
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1 WHERE webhook_id = ?"
                    " AND state = 'pending' AND event_seq IN (SELECT value FROM json_each(?))",
                    (webhook_id, json.dumps([s for b in failed for s in b.event_seqs])),
                )
            db.execute(
                "UPDATE webhooks SET consecutive_failures = ?, failing_since_ms = ?,"
                " next_attempt_at_ms = ?, last_success_at_ms = ?, last_error = ?,"
                " last_reminder_at_ms = ? WHERE id = ?",
                (
                    schedule.consecutive_failures,
                    _ms(schedule.failing_since),
                    _ms(schedule.next_attempt_at),
                    _ms(schedule.last_success_at),
                    schedule.last_error,
                    _ms(schedule.last_reminder_at),
                    webhook_id,
                ),
            )
            if disable_reason is not None:
                db.execute(
                    "UPDATE webhooks SET status = 'disabled', disabled_reason = ?,"
                    " updated_at_ms = ? WHERE id = ?",
                    (disable_reason, now_ms, webhook_id),
                )
            return _claim_batches(db, webhook_id, claim_next) if claim_next else []

        return await self._write(work, durable=False)

    async def expire(self, *, retained_since_ms: int) -> list[ExpiredCount]:
        """Mark undelivered events older than the retention as expired, per webhook.

        A batch in flight that holds an expired event is dissolved: its other events go
        back to pending, to be packed again under a new id.
        """

        def work(db: sqlite3.Connection) -> list[ExpiredCount]:
            counts = [
                ExpiredCount(webhook_id=row[0], events=row[1])
                for row in db.execute(
                    "SELECT d.webhook_id, count(*) FROM events AS e"
                    " JOIN deliveries AS d ON d.event_seq = e.seq"
                    " WHERE e.ingested_at_ms < ? AND d.state = 'pending'"
                    " GROUP BY d.webhook_id ORDER BY d.webhook_id",
                    (retained_since_ms,),
                )
            ]
            if not counts:
                return []
            # Batches being sent that hold an expired event are dissolved: their other
            # events are claimed again, under a new id.
            db.executemany(
                "UPDATE request_batches INDEXED BY request_batches_sending SET state = 'expired'"
                " WHERE webhook_id = ? AND state = 'sending' AND EXISTS (SELECT 1 FROM"
                " json_each(request_batches.event_seqs) AS j JOIN events AS e ON e.seq = j.value"
                " WHERE e.ingested_at_ms < ?)",
                [(count.webhook_id, retained_since_ms) for count in counts],
            )
            db.execute(
                "UPDATE deliveries SET state = 'expired' WHERE state = 'pending'"
                " AND event_seq IN (SELECT seq FROM events WHERE ingested_at_ms < ?)",
                (retained_since_ms,),
            )
            return counts

        return await self._write(work, durable=False)

    async def prune(self, *, retained_since_ms: int) -> int:
        """Delete events, batches and attempts older than the retention (after expiry)."""
        removed = 0
        for statement in (
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
            " WHERE ingested_at_ms < ? ORDER BY seq LIMIT {chunk})",
            "DELETE FROM request_batches WHERE id IN (SELECT id FROM request_batches"
            " WHERE created_at_ms < ? AND state != 'sending' LIMIT {chunk})",
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
            " WHERE started_at_ms < ? ORDER BY id LIMIT {chunk})",
        ):
            sql = statement.format(chunk=PRUNE_CHUNK)

            def delete_chunk(db: sqlite3.Connection, sql: str = sql) -> int:
                return int(db.execute(sql, (retained_since_ms,)).rowcount)

            while (count := await self._write(delete_chunk, durable=False)) > 0:
                removed += count
        return removed

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        """The batch flush: every held non-real-time delivery becomes due now.

        Records the flush time in the same transaction, so a restart neither skips nor
        repeats a flush. Returns the released count per webhook.
        """

        def work(db: sqlite3.Connection) -> dict[str, int]:
            counts = {
                row[0]: int(row[1])
                for row in db.execute(
                    "SELECT webhook_id, count(*) FROM deliveries INDEXED BY deliveries_held"
                    " WHERE state = 'pending' AND due_at_ms IS NULL"
                    " GROUP BY webhook_id ORDER BY webhook_id"
                )
            }
            if counts:
                db.execute(
                    "UPDATE deliveries INDEXED BY deliveries_held SET due_at_ms = ?"
                    " WHERE state = 'pending' AND due_at_ms IS NULL",
                    (now_ms,),
                )
            db.execute(
                "INSERT INTO daemon_state (key, value) VALUES ('batch.last_flush_ms', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(now_ms),),
            )
            return counts

        return await self._write(work, durable=True)

    async def last_flush_ms(self) -> int | None:
        rows = await self._fetchall(
            "SELECT value FROM daemon_state WHERE key = 'batch.last_flush_ms'"
        )
        return int(rows[0][0]) if rows else None

    async def held_backlog(self, webhook_id: str) -> int:
        """Non-real-time deliveries of this webhook waiting for the next flush."""
        rows = await self._fetchall(
            "SELECT count(*) FROM deliveries WHERE webhook_id = ?"
            " AND state = 'pending' AND due_at_ms IS NULL",
            (webhook_id,),
        )
        return int(rows[0][0])

    async def backlog_summary(self, webhook_id: str) -> dict[str, int | None]:
        """Outstanding deliveries of a webhook: real-time, batch (held or released), and
        the ingest time of the oldest one."""
        rows = await self._fetchall(
            "SELECT e.realtime, d.due_at_ms IS NULL, count(*), min(e.ingested_at_ms) FROM"  # noqa: S608 - a constant subquery
            f" ({OUTSTANDING_SQL}) AS d JOIN events AS e ON e.seq = d.event_seq GROUP BY 1, 2",
            (webhook_id, webhook_id),
        )
        summary: dict[str, int | None] = {"realtime": 0, "batch": 0, "held": 0, "oldest": None}
        for realtime, held, count, oldest in rows:
            key = "realtime" if realtime else "batch"
            summary[key] = int(summary[key] or 0) + count
            if held:
                summary["held"] = count
            current = summary["oldest"]
            summary["oldest"] = oldest if current is None else min(current, oldest)
        return summary

    async def backlog(self, webhook_id: str) -> int:
        """Deliveries of this webhook not yet delivered nor expired."""
        rows = await self._fetchall(
            f"SELECT count(*) FROM ({OUTSTANDING_SQL})",  # noqa: S608 - a constant subquery
            (webhook_id, webhook_id),
        )
        return int(rows[0][0])

    async def attempts(
        self, webhook_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The request log, newest first, before the cursor ``before_id``."""
        rows = await self._fetchall(
            "SELECT id, batch_id, started_at_ms, duration_ms, event_count, status, error,"
            " response_body FROM attempts WHERE webhook_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (webhook_id, before_id if before_id is not None else 2**63 - 1, limit),
        )
        keys = (
            "id",
            "batchId",
            "startedAt",
            "durationMs",
            "eventCount",
            "status",
            "error",
            "responseBody",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- lifecycle -------------------------------------------------------------------

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
            if self._writer is not None:
                self._queue.put_nowait(None)
                await self._writer
            while self._acknowledging:
                await asyncio.wait(set(self._acknowledging))
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

"""The PostgreSQL backend's engine: the connection pool, the migrations under an
advisory lock, the driver's errors mapped to :class:`~almhookd.errors.StorageError`
(the DSN's password never in a message), health, and the event log.

The operations of :mod:`almhookd.storage.interface` live in ``events``, ``webhooks``,
``outbox`` and ``retention``, each a mixin on this engine, as in the SQLite backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Self, TypeVar

import asyncpg
import structlog

from almhookd.config import Secret
from almhookd.dsn import redacted, scrubbed
from almhookd.errors import DatabaseInUse, StorageClosed, StorageError, StorageFull
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted
from almhookd.storage.postgres.migrations import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
)
from almhookd.storage.postgres.notices import CHANNEL, announce, parse_notice
from almhookd.storage.values import Notice

log = structlog.get_logger("almhookd.storage")

T = TypeVar("T")

#: Set while a call of the storage runs, so its own inner steps are not refused by a
#: ``close()`` that began after it.
_IN_CALL: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "almhookd_postgres_in_call", default=False
)

#: ``pg_advisory_lock`` key of the daemon holding a database alone ("almhookd-d").
DAEMON_LOCK: Final = int.from_bytes(b"almhookdD", "big") & (2**63 - 1)

#: The longest ``check()`` waits for its write.
WRITE_PROBE_SECONDS: Final = 1.0

#: SQLSTATE of a write the server has no disk space for.
DISK_FULL: Final = "53100"

#: The longest the listening connection may take to connect, and to answer its check
#: at each beat (both run in the beat, between two renewals).
LISTEN_CONNECT_SECONDS: Final = 2.0
LISTEN_CHECK_SECONDS: Final = 1.0
#: The listening connection's ``application_name``, as ``pg_stat_activity`` shows it.
LISTENER_NAME: Final = "almhookd listener"

#: Connections per process: ingest, a worker's claim and record, the API's reads.
POOL_MIN: Final = 2
POOL_MAX: Final = 10

#: The pooled connections' session: commits do not wait for the disk unless a
#: transaction asks (``_write``'s ``durable``, the ingest function), which saves the
#: delivery bookkeeping a ``SET LOCAL`` round trip per transaction; and no JIT: the
#: statements are short, and a plan estimated past ``jit_above_cost`` (a claim on a
#: large table) would spend 50-100 ms compiling at each call.
SESSION_SETTINGS: Final = {
    "synchronous_commit": "off",
    "jit": "off",
    "application_name": "almhookd",
}


class PostgresEngine:
    """One process's connections to the shared database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        where: str,
        clock: Clock,
        on_events_committed: EventsCommitted | None,
    ) -> None:
        self._pool: asyncpg.Pool | None = pool
        #: calls under way; ``close()`` lets them finish before it closes the pool
        self._calls = 0
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self._closing = False
        #: the connection holding the database alone (``exclusive``: migrate-store)
        self._holder: asyncpg.Connection | None = None
        self._lock_lost = False
        #: set once ``close()`` has finished: a second ``close()`` waits for it
        self._closed = asyncio.Event()
        #: the write probe of ``check()``, shared by the calls that overlap it
        self._write_probe: asyncio.Future[None] | None = None
        #: appends waiting for the group commit, in call order (``events.append``)
        self._appends: deque[Any] = deque()
        #: the task committing them, group after group, while any wait
        self._drainer: asyncio.Task[None] | None = None
        #: group commits done (tests read it)
        self.commits = 0
        #: the database as messages name it: the DSN without its password
        self.where = where
        #: this process among those sharing the database: random at each start, so that
        #: a restarted process never inherits the leases of its former self
        self.process_id = "p_" + secrets.token_hex(8)
        self._clock = clock
        self._on_events_committed = on_events_committed
        self._dsn: Secret | None = None
        #: the connection listening for the other processes' notices (``listen``)
        self._listener: asyncpg.Connection | None = None

    @classmethod
    async def open(
        cls,
        dsn: Secret,
        *,
        clock: Clock,
        on_events_committed: EventsCommitted | None = None,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        exclusive: bool = False,
    ) -> Self:
        """Connect, and migrate the schema to this version (once, whoever else starts).

        ``exclusive`` (``almhookd migrate-store``'s): hold the database alone among the
        exclusive openers, on a connection of its own, until :meth:`close`; raises
        :class:`DatabaseInUse` when another one holds it. Daemons share a database
        (:mod:`almhookd.delivery.cluster`) and never open it so.
        """
        secret = dsn.reveal()
        where = redacted(secret)
        try:
            pool = await asyncpg.create_pool(
                secret,
                min_size=min_size,
                max_size=max_size,
                command_timeout=60,
                server_settings=SESSION_SETTINGS,
                reset=_keep_session,
            )
        except Exception as error:
            raise StorageError(
                f"{where}: cannot connect: {type(error).__name__}: {scrubbed(str(error), secret)}"
            ) from None
        engine = cls(pool, where=where, clock=clock, on_events_committed=on_events_committed)
        engine._dsn = dsn
        try:
            if exclusive:
                await engine._hold_exclusively(secret)
            await engine._migrate()
        except BaseException:
            await engine.close()
            raise
        return engine

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; the driver's errors leave as :class:`StorageError`."""
        pool = self._pool
        if pool is None:
            raise StorageClosed()
        async with self._call():
            try:
                async with pool.acquire() as connection:
                    yield connection
            except asyncpg.exceptions.InterfaceError as error:
                raise StorageError(f"{self.where}: {error}") from None
            except (asyncpg.PostgresError, OSError) as error:
                if getattr(error, "sqlstate", None) == DISK_FULL:
                    raise StorageFull(f"{self.where}: the database server's disk is full") from None
                raise StorageError(f"{self.where}: {_described(error)}") from None

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """One call under way: refused once ``close()`` began (unless it is part of a call
        that began before), waited for by it."""
        if self._closing and not _IN_CALL.get():
            raise StorageClosed()
        if self._lock_lost:
            raise StorageError(
                f"{self.where}: this almhookd lost its hold on the database (the connection "
                "holding it was closed), so another one may have started: it stops using "
                "it; restart almhookd"
            )
        self._calls += 1
        self._no_calls.clear()
        token = _IN_CALL.set(True)
        try:
            yield
        finally:
            _IN_CALL.reset(token)
            self._calls -= 1
            if self._calls == 0:
                self._no_calls.set()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _write(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        durable: bool = True,
        notice: Notice | None = None,
    ) -> T:
        """Run ``work`` in one transaction on a pooled connection.

        ``durable`` commits with ``synchronous_commit = on`` (on disk before returning,
        whatever the server's default); else with the session's ``off``
        (SESSION_SETTINGS): the delivery bookkeeping, as SQLite's ``synchronous=NORMAL``
        connection. A server crash may then lose the last few hundred milliseconds of
        it, which sends those events again (at least once, never lost); waiting for the
        disk at every acknowledgement made a drain 10 times slower. ``notice`` goes to
        the other processes if the transaction commits.
        """
        async with self._connection() as connection, connection.transaction():
            if durable:
                await connection.execute("SET LOCAL synchronous_commit = on")
            result = await work(connection)
            if notice is not None:
                await announce(connection, notice)
            return result

    def _webhook_notice(self, webhook_id: str) -> Notice:
        return Notice(kind="webhook", origin=self.process_id, webhook_id=webhook_id)

    async def copy_in(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one durable transaction (``almhookd migrate-store``)."""
        return await self._write(work)

    async def _fetch(self, sql: str, *arguments: object) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return list(await connection.fetch(sql, *arguments))

    async def _hold_exclusively(self, dsn: str) -> None:
        try:
            holder = await asyncpg.connect(dsn)
        except Exception as error:
            raise StorageError(
                f"{self.where}: cannot connect: {type(error).__name__}: {scrubbed(str(error), dsn)}"
            ) from None
        if not await holder.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK):
            await holder.close()
            raise DatabaseInUse(
                f"{self.where}: another almhookd migrate-store is writing into this database"
            )
        holder.add_termination_listener(self._on_lock_lost)
        self._holder = holder

    async def listen(
        self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]
    ) -> None:
        """Hear the notices of the other processes (:mod:`.notices`) on a connection of
        its own, until :meth:`close`; ``on_lost`` runs if that connection breaks (the
        caller listens again, and meanwhile polls: notices sent in between are lost)."""
        if self._dsn is None:
            raise StorageClosed()
        secret = self._dsn.reveal()
        async with self._call():
            try:
                listener = await asyncpg.connect(
                    secret,
                    timeout=LISTEN_CONNECT_SECONDS,
                    server_settings={"application_name": LISTENER_NAME},
                )
            except Exception as error:
                raise StorageError(
                    f"{self.where}: cannot connect: {type(error).__name__}: "
                    f"{scrubbed(str(error), secret)}"
                ) from None
            own = self.process_id

            def heard(_connection: object, _pid: int, _channel: str, payload: str) -> None:
                notice = parse_notice(payload)
                if notice is not None and notice.origin != own:
                    on_notice(notice)

            def lost(_connection: object) -> None:
                if self._listener is listener:
                    self._listener = None
                    if not self._closing:
                        on_lost()

            try:
                await listener.add_listener(CHANNEL, heard)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
                listener.terminate()
                raise StorageError(f"{self.where}: {_described(error)}") from None
            listener.add_termination_listener(lost)
            previous, self._listener = self._listener, listener
            if previous is not None:
                previous.terminate()

    async def check_listener(self) -> None:
        """Raise :class:`StorageError` and drop the listening connection unless it
        answers within LISTEN_CHECK_SECONDS: a connection cut by the network, not
        closed, looks alive and hears nothing (asyncpg sets no TCP keepalive)."""
        if self._listener is None:
            return
        listener: asyncpg.Connection = self._listener
        try:
            await asyncio.wait_for(listener.execute("SELECT 1"), LISTEN_CHECK_SECONDS)
        except Exception:  # whatever failed, listening starts again on a new connection
            if self._listener is listener:
                self._listener = None
            listener.terminate()
            raise StorageError(
                f"{self.where}: the listening connection did not answer; listening again"
            ) from None

    @property
    def listening(self) -> bool:
        """Whether notices are being heard (:meth:`listen`, and its connection is up)."""
        return self._listener is not None and not self._listener.is_closed()

    def _on_lock_lost(self, _connection: object) -> None:
        if self._holder is not None and not self._closing:
            self._lock_lost = True
            log.error("storage.lock_lost", database=self.where)

    async def _migrate(self) -> None:
        async with self._connection() as connection:
            # Session-level: held across the migrations' own transactions, released
            # below (or by the server when this connection dies).
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                # No DDL when the table is there: a start needs no write when nothing
                # is to migrate (a read-only server then starts and reports unhealthy).
                if await connection.fetchval("SELECT to_regclass('almhookd_schema')") is None:
                    await connection.execute(SCHEMA_TABLE)
                version = await connection.fetchval(
                    "SELECT coalesce(max(version), 0) FROM almhookd_schema"
                )
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.where}: database schema version {version} is newer than "
                        f"this almhookd supports ({SCHEMA_VERSION}); upgrade almhookd"
                    )
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    async with connection.transaction():
                        await connection.execute(MIGRATIONS[number - 1])
                        await connection.execute(
                            "INSERT INTO almhookd_schema (version) VALUES ($1)", number
                        )
                    log.info("storage.migrated", database=self.where, schema_version=number)
            finally:
                try:
                    await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
                except BaseException:
                    # The pool keeps sessions as they are (_keep_session): a lock left
                    # held would stop every other process's start. Ending the session
                    # releases it.
                    connection.terminate()
                    raise

    # --- Health ------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    async def check(self) -> None:
        """Raise :class:`StorageError` unless a write gets through within
        ``WRITE_PROBE_SECONDS`` (a read-only server, a standby after a failover, or a
        pool with every connection stuck reads fine or not at all, and writes nothing).
        The probe left running after a timeout is shared by later calls."""
        async with self._call():
            if self._write_probe is None or self._write_probe.done():
                self._write_probe = asyncio.ensure_future(self.ping())
            try:
                await asyncio.wait_for(asyncio.shield(self._write_probe), WRITE_PROBE_SECONDS)
            except TimeoutError:
                raise StorageError(
                    f"{self.where}: the database takes no write within {WRITE_PROBE_SECONDS:g} s"
                ) from None

    async def ping(self) -> None:
        """A write: the database takes writes (a row of ``daemon_state``)."""
        async with self._connection() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO daemon_state (key, value) VALUES ('health.ping', now()::text)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )

    async def probe_space(self) -> None:
        """A write that needs room: raises :class:`StorageFull` while the server has none."""
        try:
            async with self._connection() as connection, connection.transaction():
                # Random bytes stored as they are: a compressible filler could fit in a
                # page while real rows no longer do. Rolled back: nothing stays.
                await connection.execute("CREATE TABLE almhookd_space_probe (filler bytea)")
                await connection.execute(
                    "ALTER TABLE almhookd_space_probe ALTER filler SET STORAGE EXTERNAL"
                )
                await connection.execute(
                    "INSERT INTO almhookd_space_probe SELECT string_agg(decode(md5("
                    "random()::text || n), 'hex'), ''::bytea) FROM generate_series(1, 4096) AS n"
                )
                raise _RollBack
        except _RollBack:
            pass

    async def close(self) -> None:
        """Let the calls under way finish, then close the pool; idempotent (a second call
        returns once the first has finished)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        await self._no_calls.wait()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        holder, self._holder = self._holder, None
        if holder is not None:
            await holder.close()  # the server releases the lock with the session
        self._closed.set()


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's reset: none. asyncpg's default (``RESET ALL``, ``UNLISTEN *``, advisory
    locks released) is a round trip at every release, and nothing here leaves session
    state behind: settings are ``SET LOCAL``, listening has its own connection, and the
    one session lock (the migrations') is released or its session ended. An open
    transaction is still rolled back by the pool before this runs."""


class _RollBack(Exception):
    """Ends a transaction whose writes must not stay."""


def _described(error: BaseException) -> str:
    """A driver error as a message may carry it: PostgreSQL's primary message and its
    SQLSTATE, never its DETAIL (which may quote a failing row, secrets included)."""
    message = getattr(error, "message", None) or (error.args[0] if error.args else "")
    sqlstate = getattr(error, "sqlstate", None)
    return f"{type(error).__name__}: {message}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")

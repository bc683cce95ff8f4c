"""``almhookd migrate-store``: a stopped SQLite install copied into an empty PostgreSQL
database, in one transaction, its row counts checked before the commit.

The SQLite file is opened as the daemon opens it (its lock taken, so a running daemon
makes this refuse; its schema brought to the current version), then read table by
table in chunks; PostgreSQL receives the rows with ``COPY``. What moves: webhooks with
their subscriptions and signing secrets (rotation state included), the retained events,
every delivery (pending, delivered, expired, held), the batches being sent (same ids,
so a receiver de-duplicates a resend), the attempts log (same ids) and the daemon's
state (the last batch flush).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg

from almhookd.config import Secret
from almhookd.errors import StorageError
from almhookd.protocols import Clock
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.sqlite import SqliteStorage

#: Rows read from SQLite and sent to PostgreSQL at a time.
CHUNK: Final = 5_000


def _flag(value: Any) -> bool:
    return bool(value)


def _seqs(value: Any) -> list[int] | None:
    return None if value is None else [int(seq) for seq in json.loads(value)]


@dataclass(frozen=True, kw_only=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    order: str  #: SQLite's order of the rows (the batches' claim order, the attempt ids)
    convert: dict[str, Callable[[Any], Any]]


#: In the order the foreign keys need.
TABLES: Final = (
    Table(
        name="webhooks",
        columns=(
            "id",
            "name",
            "description",
            "target_url",
            "auth_type",
            "auth_username",
            "auth_password",
            "contact_email",
            "status",
            "disabled_reason",
            "created_at_ms",
            "updated_at_ms",
            "consecutive_failures",
            "failing_since_ms",
            "next_attempt_at_ms",
            "last_success_at_ms",
            "last_error",
            "last_reminder_at_ms",
        ),
        order="created_at_ms, id",
        convert={},
    ),
    Table(
        name="webhook_events",
        columns=("event_name", "webhook_id"),
        order="webhook_id, event_name",
        convert={},
    ),
    Table(
        name="signing_secrets",
        columns=("webhook_id", "secret", "created_at_ms", "expires_at_ms"),
        order="webhook_id, created_at_ms",
        convert={},
    ),
    Table(
        name="events",
        columns=(
            "seq",
            "event_id",
            "event_name",
            "account_id",
            "timestamp_ms",
            "realtime",
            "ingested_at_ms",
            "body",
        ),
        order="seq",
        convert={"realtime": _flag},
    ),
    Table(
        name="request_batches",
        columns=("id", "webhook_id", "created_at_ms", "attempts", "state", "event_seqs"),
        order="rowid",
        convert={"event_seqs": _seqs},
    ),
    Table(
        name="deliveries",
        columns=(
            "webhook_id",
            "event_seq",
            "state",
            "due_at_ms",
            "attempts",
            "batch_id",
            "delivered_at_ms",
            "realtime",
        ),
        order="webhook_id, event_seq",
        convert={"realtime": _flag},
    ),
    Table(
        name="attempts",
        columns=(
            "id",
            "webhook_id",
            "batch_id",
            "started_at_ms",
            "duration_ms",
            "event_count",
            "status",
            "error",
            "response_body",
        ),
        order="id",
        convert={},
    ),
    Table(name="daemon_state", columns=("key", "value"), order="key", convert={}),
)


async def migrate_store(path: Path, dsn: Secret, *, clock: Clock) -> dict[str, int]:
    """Copy the SQLite database at ``path`` into the empty PostgreSQL database ``dsn``;
    returns the rows copied per table. Raises :class:`StorageError` (nothing copied)
    when the file is missing or in use, the target is not empty, or a count differs."""
    _check_source(path)
    source = await SqliteStorage.open(path, clock=clock)  # the daemon's lock, or refused
    try:
        target = await PostgresStorage.open(dsn, clock=clock, exclusive=True)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return await target.copy_in(lambda connection: _copy(db, connection))
        finally:
            await target.close()
    finally:
        await source.close()


def _check_source(path: Path) -> None:
    # Opening would create an empty database: a mistyped path must not copy nothing.
    if not path.is_file():
        raise StorageError(f"{path}: no SQLite database there to copy")


async def _copy(db: sqlite3.Connection, connection: asyncpg.Connection) -> dict[str, int]:
    held = await connection.fetchval(
        "SELECT (SELECT count(*) FROM webhooks) + (SELECT count(*) FROM events)"
    )
    if held:
        raise StorageError(
            "the PostgreSQL database is not empty (it holds webhooks or events): "
            "migrate-store copies into an empty one only"
        )
    copied: dict[str, int] = {}
    for table in TABLES:
        cursor = db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"  # noqa: S608 - fixed names
        )
        count = 0
        while rows := cursor.fetchmany(CHUNK):
            await connection.copy_records_to_table(
                table.name, records=_converted(table, rows), columns=list(table.columns)
            )
            count += len(rows)
        expected = db.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]  # noqa: S608
        arrived = await connection.fetchval(f"SELECT count(*) FROM {table.name}")  # noqa: S608
        if not count == expected == arrived:
            raise StorageError(
                f"{table.name}: {expected} rows in SQLite, {count} read, {arrived} in "
                "PostgreSQL; nothing was copied"
            )
        copied[table.name] = count
    # The next attempt id follows the copied ones.
    await connection.execute(
        "SELECT setval(pg_get_serial_sequence('attempts', 'id'),"
        " coalesce(max(id), 0) + 1, false) FROM attempts"
    )
    return copied


def _converted(table: Table, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    if not table.convert:
        return [tuple(row) for row in rows]
    steps = [table.convert.get(column) for column in table.columns]
    return [
        tuple(
            value if step is None else step(value) for step, value in zip(steps, row, strict=True)
        )
        for row in rows
    ]

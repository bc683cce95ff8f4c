"""Remembering the event ids already processed, in memory or in a SQLite file."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Protocol


class Deduplicator(Protocol):
    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; ``True`` if it was not seen before."""


class MemoryDeduplicator:
    """The last ``capacity`` event ids, in memory."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


class SqliteDeduplicator:
    """Event ids in a SQLite file, so de-duplication survives restarts."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY) WITHOUT ROWID"
        )

    def first_time(self, event_id: str) -> bool:
        cursor = self._db.execute("INSERT OR IGNORE INTO seen (event_id) VALUES (?)", (event_id,))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()


# --- ordering -----------------------------------------------------------------------

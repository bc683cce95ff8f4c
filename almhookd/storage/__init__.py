"""Where almhookd keeps its state, behind one interface (:mod:`.interface`).

Backends: :mod:`.sqlite` (the embedded default, one daemon), :mod:`.postgres` (several
daemons may share one database) and :mod:`.memory` (for tests).
"""

from __future__ import annotations

from almhookd.config import StorageConfig
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted, SharedStorage, Storage
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.sqlite import SqliteStorage


async def open_storage(
    config: StorageConfig, *, clock: Clock, on_events_committed: EventsCommitted | None = None
) -> Storage:
    """Open the configured backend; ``on_events_committed`` runs after each ingest
    commit that stored events (it wakes the delivery workers)."""
    if config.backend == "postgresql":
        assert config.dsn is not None
        return await PostgresStorage.open(
            config.dsn, clock=clock, on_events_committed=on_events_committed
        )
    return await SqliteStorage.open(
        config.path, clock=clock, on_events_committed=on_events_committed
    )


def shared(store: Storage) -> SharedStorage | None:
    """``store`` if several processes may share it (PostgreSQL), else ``None``."""
    return store if isinstance(store, PostgresStorage) else None

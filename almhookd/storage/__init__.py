"""Where almhookd keeps its state, behind one interface (:mod:`.interface`).

Backends: :mod:`.sqlite` (the embedded default), :mod:`.postgres` (one daemon per
database for now) and :mod:`.memory` (for tests).
"""

from __future__ import annotations

from almhookd.config import StorageConfig
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted, Storage
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
            config.dsn, clock=clock, on_events_committed=on_events_committed, exclusive=True
        )
    return await SqliteStorage.open(
        config.path, clock=clock, on_events_committed=on_events_committed
    )

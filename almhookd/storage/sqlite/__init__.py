"""The SQLite backend, the embedded default: one file, one process.

``engine`` owns the connections, the writer thread, group commit, the syncer that makes
ingest durable, and checkpoints; ``files`` the file's privacy and its lock; ``queries``
the SQL; ``ingest``, ``events``, ``webhooks``, ``outbox`` and ``retention`` the
operations of :mod:`almhookd.storage.interface`, each on the engine.
"""

from __future__ import annotations

from almhookd.storage.sqlite.events import EventOps
from almhookd.storage.sqlite.outbox import OutboxOps
from almhookd.storage.sqlite.retention import RetentionOps
from almhookd.storage.sqlite.webhooks import WebhookOps

__all__ = ["SqliteStorage"]


class SqliteStorage(EventOps, WebhookOps, OutboxOps, RetentionOps):
    """Durable storage of events and delivery state in one SQLite file.

    Open it with :meth:`open` (creates, locks and migrates the file); the commit
    notification is passed there."""

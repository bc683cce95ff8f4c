"""The PostgreSQL backend (issue 23, under construction): several almhookd processes on
one database.

``engine`` owns the connection pool, the migrations and health; ``events``,
``webhooks``, ``outbox`` and ``retention`` the operations of
:mod:`almhookd.storage.interface`, each on the engine, as in the SQLite backend. The
daemon opens it with ``exclusive=True`` (one daemon per database) until the ownership
of webhooks across processes and the wake-ups between them are built.
"""

from __future__ import annotations

from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.events import EventOps
from almhookd.storage.postgres.leases import Lease, LeaseOps, Membership
from almhookd.storage.postgres.outbox import OutboxOps
from almhookd.storage.postgres.retention import RetentionOps
from almhookd.storage.postgres.webhooks import WebhookOps

__all__ = ["Lease", "Membership", "PostgresEngine", "PostgresStorage"]


class PostgresStorage(EventOps, WebhookOps, OutboxOps, RetentionOps, LeaseOps):
    """Events and delivery state in a PostgreSQL database, shared by processes.

    Open it with :meth:`open` (connects and migrates)."""

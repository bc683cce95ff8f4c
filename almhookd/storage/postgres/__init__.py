"""The PostgreSQL backend: several almhookd processes on one database.

``engine`` owns the connection pool, the migrations, health and the listening
connection; ``events``, ``webhooks``, ``outbox`` and ``retention`` the operations of
:mod:`almhookd.storage.interface`, each on the engine, as in the SQLite backend;
``leases`` the processes and who delivers to which webhook, ``notices`` the wake-ups
between processes (:mod:`almhookd.delivery.cluster` uses both).
"""

from __future__ import annotations

from almhookd.domain.ownership import Lease
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.events import EventOps
from almhookd.storage.postgres.leases import LeaseOps
from almhookd.storage.postgres.outbox import OutboxOps
from almhookd.storage.postgres.retention import RetentionOps
from almhookd.storage.postgres.webhooks import WebhookOps
from almhookd.storage.values import ClusterView, Membership

__all__ = ["ClusterView", "Lease", "Membership", "PostgresEngine", "PostgresStorage"]


class PostgresStorage(EventOps, WebhookOps, OutboxOps, RetentionOps, LeaseOps):
    """Events and delivery state in a PostgreSQL database, shared by processes.

    Open it with :meth:`open` (connects and migrates)."""

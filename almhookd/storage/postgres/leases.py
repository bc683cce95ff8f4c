"""Leases: which process delivers to which webhook when several share the database.

The rules of who should hold what are pure (:mod:`almhookd.domain.ownership`); this
module keeps the record, in the server's clock. A lease is taken only when free or
expired, and each new owner raises its ``fence``: a step of a worker that checks its
``(owner, fence)`` inside its own transaction (:meth:`LeaseOps.check_lease`, with the
lease row locked against a takeover until that transaction ends) can never be one of
a process whose lease was taken over.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from almhookd.domain.ownership import Lease
from almhookd.errors import LeaseLost
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.migrations import SERVER_NOW_SQL as SERVER_NOW
from almhookd.storage.values import ClusterView, Membership, ProcessRecord

#: A process not heard from for this long is forgotten (its row deleted).
FORGET_AFTER_MS: Final = 86_400_000


async def check_lease(connection: asyncpg.Connection, process_id: str, lease: Lease) -> None:
    """Inside a worker's transaction: raise :class:`LeaseLost` unless this process
    still holds the lease, unexpired, and keep the row locked (``FOR SHARE``) so no
    takeover commits before this transaction does."""
    held = await connection.fetchval(
        "SELECT almhookd_holds_lease($1, $2, $3)", lease.webhook_id, process_id, lease.fence
    )
    if not held:
        raise lease_lost(lease)


def lease_lost(lease: Lease) -> LeaseLost:
    return LeaseLost(
        f"webhook {lease.webhook_id}: this process's lease (fence {lease.fence}) "
        "was lost; another process delivers to it now"
    )


class LeaseOps(PostgresEngine):
    async def join(self, process_id: str, *, host: str, pid: int) -> None:
        """Record this process (a new id at each start)."""

        async def work(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "INSERT INTO processes (id, host, pid, started_at_ms, heartbeat_at_ms)"  # noqa: S608 - SERVER_NOW is a constant
                f" VALUES ($1, $2, $3, {SERVER_NOW}, {SERVER_NOW})",
                process_id,
                host,
                pid,
            )

        await self._write(work)

    async def heartbeat(self, process_id: str, *, lease_ms: int, dead_after_ms: int) -> Membership:
        """Say this process lives, renew its unexpired leases by ``lease_ms``, and list
        the processes heard from within ``dead_after_ms``. An expired lease is not
        renewed: another process may already have taken it, so it is lost."""

        async def work(connection: asyncpg.Connection) -> Membership:
            now_ms = await connection.fetchval(f"SELECT {SERVER_NOW}")
            beat = await connection.execute(
                "UPDATE processes SET heartbeat_at_ms = $2 WHERE id = $1", process_id, now_ms
            )
            if beat == "UPDATE 0":
                # Forgotten after a day unheard (a database down that long): join again,
                # or the others would never count this process live.
                await connection.execute(
                    "INSERT INTO processes (id, host, pid, started_at_ms, heartbeat_at_ms)"
                    " VALUES ($1, '(joined again)', 0, $2, $2)",
                    process_id,
                    now_ms,
                )
            held = await connection.fetch(
                "UPDATE webhook_leases SET expires_at_ms = $2 + $3::bigint"
                " WHERE owner = $1 AND expires_at_ms > $2"
                " RETURNING webhook_id, fence, expires_at_ms",
                process_id,
                now_ms,
                lease_ms,
            )
            await connection.execute(
                "DELETE FROM processes WHERE heartbeat_at_ms < $1", now_ms - FORGET_AFTER_MS
            )
            live = await connection.fetch(
                "SELECT id FROM processes WHERE heartbeat_at_ms >= $1 ORDER BY id",
                now_ms - dead_after_ms,
            )
            return Membership(
                now_ms=now_ms,
                live=tuple(row[0] for row in live),
                held=tuple(
                    sorted(
                        (Lease(webhook_id=r[0], fence=r[1], expires_at_ms=r[2]) for r in held),
                        key=lambda lease: lease.webhook_id,
                    )
                ),
            )

        return await self._write(work)

    async def acquire(self, process_id: str, webhook_id: str, *, lease_ms: int) -> Lease | None:
        """Take the webhook's lease if it is free or expired (a new fence); None when
        another process holds it, or there is no such webhook."""

        async def work(connection: asyncpg.Connection) -> Lease | None:
            if not await connection.fetchval("SELECT 1 FROM webhooks WHERE id = $1", webhook_id):
                return None
            row = await connection.fetchrow(
                "INSERT INTO webhook_leases AS l (webhook_id, owner, fence, expires_at_ms)"  # noqa: S608 - SERVER_NOW is a constant
                f" VALUES ($1, $2, 1, {SERVER_NOW} + $3::bigint)"
                " ON CONFLICT (webhook_id) DO UPDATE SET owner = excluded.owner,"
                " fence = l.fence + 1, expires_at_ms = excluded.expires_at_ms"
                f" WHERE l.owner IS NULL OR l.expires_at_ms <= {SERVER_NOW}"
                " RETURNING fence, expires_at_ms",
                webhook_id,
                process_id,
                lease_ms,
            )
            if row is None:
                return None
            return Lease(webhook_id=webhook_id, fence=row[0], expires_at_ms=row[1])

        return await self._write(work)

    async def release(self, process_id: str, lease: Lease) -> None:
        """Give the lease up at once (a process leaving, or holding more than its share)."""

        async def work(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "UPDATE webhook_leases SET owner = NULL, expires_at_ms = 0"
                " WHERE webhook_id = $1 AND owner = $2 AND fence = $3",
                lease.webhook_id,
                process_id,
                lease.fence,
            )

        await self._write(work)

    async def holds(self, process_id: str, lease: Lease) -> bool:
        """Whether this process still holds ``lease`` (its own transaction)."""

        async def work(connection: asyncpg.Connection) -> bool:
            try:
                await check_lease(connection, process_id, lease)
            except LeaseLost:
                return False
            return True

        return await self._write(work)

    async def leave(self, process_id: str) -> None:
        """Give up every lease this process holds and leave the cluster (a clean stop:
        the others take its webhooks over at their next renewal, not after expiry)."""

        async def work(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "UPDATE webhook_leases SET owner = NULL, expires_at_ms = 0 WHERE owner = $1",
                process_id,
            )
            await connection.execute("DELETE FROM processes WHERE id = $1", process_id)

        await self._write(work)

    async def cluster_view(self, *, dead_after_ms: int) -> ClusterView:
        """The processes heard from within ``dead_after_ms`` and who holds which webhook
        (unexpired leases), read as one snapshot, in the server's clock."""
        async with (
            self._connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            now_ms = await connection.fetchval(f"SELECT {SERVER_NOW}")
            processes = await connection.fetch(
                "SELECT id, host, pid, started_at_ms, heartbeat_at_ms FROM processes"
                " WHERE heartbeat_at_ms >= $1 ORDER BY started_at_ms, id",
                now_ms - dead_after_ms,
            )
            leases = await connection.fetch(
                "SELECT webhook_id, owner, fence, expires_at_ms FROM webhook_leases"
                " WHERE owner IS NOT NULL AND expires_at_ms > $1 ORDER BY webhook_id",
                now_ms,
            )
        return ClusterView(
            now_ms=now_ms,
            processes=tuple(
                ProcessRecord(
                    id=r[0], host=r[1], pid=r[2], started_at_ms=r[3], heartbeat_at_ms=r[4]
                )
                for r in processes
            ),
            owners={
                r[0]: (r[1], Lease(webhook_id=r[0], fence=r[2], expires_at_ms=r[3])) for r in leases
            },
        )

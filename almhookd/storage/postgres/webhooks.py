"""Webhooks, their signing secrets, replay, and the admin's view of their deliveries."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Final

import asyncpg

from almhookd.config import Secret
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import (
    NewWebhook,
    SigningSecret,
    Webhook,
    WebhookChanges,
    WebhookStatus,
)
from almhookd.errors import WebhookLimitReached
from almhookd.storage.postgres.engine import PostgresEngine
from almhookd.storage.postgres.queries import (
    REWIND_CONFLICT_SQL,
    REWIND_FROM_SQL,
    SELECT_WEBHOOKS,
    SWEEP_LOCK_SQL,
    written_webhook,
)
from almhookd.storage.rows import (
    attempt_record,
    backlog_counts,
    changed_columns,
    delivery_record,
    webhook_from_row,
)
from almhookd.storage.values import AttemptRecord, BacklogSummary, DeliveryRecord, DeliveryStatus

#: ``pg_advisory_xact_lock`` key of webhook creation: the count against
#: ``max_webhooks`` and the insert are one step across processes ("webhooks" in ASCII).
CREATE_LOCK: Final = int.from_bytes(b"webhooks", "big") >> 1

#: A webhook's row locked against its deletion ($1), for a writer of the hot tables.
LOCK_WEBHOOK_SQL: Final = "SELECT 1 FROM webhooks WHERE id = $1 FOR KEY SHARE"

#: A webhook deleted ($1), in one transaction: after the batch flush or expiry under
#: way, its lease, then its row, with the tables whose keys cascade from it
#: (subscriptions, secrets, claim cursor) and the rows of the hot tables, which a
#: trigger deletes (migration 4). The flush and expiry lock deliveries, then claim
#: cursors; a deletion the other way round could deadlock with them, hence the lock
#: they share. The lease before the row: a fenced step holds it (FOR SHARE) before it
#: writes the webhook's row or its cursor.
DELETE_WEBHOOK_SQL: Final = (
    SWEEP_LOCK_SQL,
    "DELETE FROM webhook_leases WHERE webhook_id = $1",
    "DELETE FROM webhooks WHERE id = $1",
)

#: A webhook's deliveries as the admin sees them (parameters: webhook id, after seq,
#: state or NULL, limit), through the ``delivery_states`` rule with the webhook's
#: events being sent read once.
DELIVERIES_SQL: Final = (
    "WITH s AS MATERIALIZED (SELECT event_seq, batch_id FROM sending WHERE webhook_id = $1)"
    " SELECT d.event_seq, e.event_id, e.event_name, e.ingested_at_ms, d.state,"
    " d.attempts, d.batch_id, d.delivered_at_ms, d.due_at_ms FROM (SELECT d.event_seq,"
    " d.attempts, d.delivered_at_ms, d.due_at_ms,"
    " CASE WHEN d.state = 'pending' AND s.event_seq IS NOT NULL"
    " THEN 'sending' ELSE d.state END AS state,"
    " coalesce(d.batch_id, CASE WHEN d.state = 'pending' THEN s.batch_id END) AS batch_id"
    " FROM deliveries AS d LEFT JOIN s ON s.event_seq = d.event_seq"
    " WHERE d.webhook_id = $1 AND d.event_seq > $2) AS d"
    " JOIN events AS e ON e.seq = d.event_seq"
    " WHERE ($3::text IS NULL OR d.state = $3) ORDER BY d.event_seq LIMIT $4"
)

#: A webhook's pending deliveries by kind (parameter: the webhook id): released ones by
#: their event's kind, held ones (always of batch events), each with the lowest seq.
BACKLOG_SUMMARY_SQL: Final = (
    "SELECT realtime, false, count(*), min(event_seq) FROM deliveries"
    " WHERE webhook_id = $1 AND state = 'pending' AND due_at_ms IS NOT NULL GROUP BY realtime"
    " UNION ALL SELECT false, true, count(*), min(event_seq) FROM deliveries"
    " WHERE webhook_id = $1 AND state = 'pending' AND due_at_ms IS NULL"
)


async def _add_subscriptions(
    connection: asyncpg.Connection, webhook_id: str, events: frozenset[str]
) -> None:
    await connection.execute(
        "INSERT INTO webhook_events (event_name, webhook_id)"
        " SELECT name, $2 FROM unnest($1::text[]) AS name",
        sorted(events),
        webhook_id,
    )


async def _add_secret(connection: asyncpg.Connection, webhook_id: str, now_ms: int) -> None:
    await connection.execute(
        "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms) VALUES ($1, $2, $3)",
        webhook_id,
        generate_secret(),
        now_ms,
    )


class WebhookOps(PostgresEngine):
    """The webhooks' side of the backend: every change one transaction."""

    async def create_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        webhook_id = "wh_" + secrets.token_hex(8)
        now_ms = self._now_ms()

        async def work(connection: asyncpg.Connection) -> Webhook:
            if max_webhooks is not None:
                # Processes creating at once queue here, so the count cannot pass twice.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
                if await connection.fetchval("SELECT count(*) FROM webhooks") >= max_webhooks:
                    raise WebhookLimitReached(max_webhooks)
            await connection.execute(
                "INSERT INTO webhooks (id, name, description, target_url, auth_type,"
                " auth_username, auth_password, contact_email, status, created_at_ms,"
                " updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
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
            )
            await _add_subscriptions(connection, webhook_id, new.events)
            if new.auth_type == "signature":
                await _add_secret(connection, webhook_id, now_ms)
            return await written_webhook(connection, webhook_id)

        return await self._write(work, notice=self._webhook_notice(webhook_id))

    async def list_webhooks(self) -> list[Webhook]:
        rows = await self._fetch(SELECT_WEBHOOKS + " ORDER BY w.created_at_ms, w.id")
        return [webhook_from_row(row) for row in rows]

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = await self._fetch(SELECT_WEBHOOKS + " WHERE w.id = $1", webhook_id)
        return webhook_from_row(rows[0]) if rows else None

    async def set_webhook_status(
        self, webhook_id: str, status: WebhookStatus, reason: str | None = None
    ) -> None:
        """Archive (``inactive``), disable (``disabled``, with a reason) or re-enable;
        re-enabling clears the failure schedule, so delivery resumes at once."""
        now_ms = self._now_ms()

        async def work(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "UPDATE webhooks SET status = $1, disabled_reason = $2, updated_at_ms = $3"
                " WHERE id = $4",
                status,
                reason,
                now_ms,
                webhook_id,
            )
            if status == "active":
                await connection.execute(
                    "UPDATE webhooks SET consecutive_failures = 0, failing_since_ms = NULL,"
                    " next_attempt_at_ms = NULL, last_reminder_at_ms = NULL WHERE id = $1",
                    webhook_id,
                )

        await self._write(work, notice=self._webhook_notice(webhook_id))

    async def delete_webhook(self, webhook_id: str) -> bool:
        async def work(connection: asyncpg.Connection) -> bool:
            lock, lease, row = DELETE_WEBHOOK_SQL
            await connection.execute(lock)
            await connection.execute(lease, webhook_id)
            return str(await connection.execute(row, webhook_id)) != "DELETE 0"

        return await self._write(work, notice=self._webhook_notice(webhook_id))

    async def count_webhooks(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM webhooks")
        return int(rows[0][0])

    async def name_taken(self, name: str, *, except_id: str | None = None) -> str | None:
        rows = await self._fetch(
            "SELECT id FROM webhooks WHERE name = $1 AND id != $2", name, except_id or ""
        )
        return str(rows[0][0]) if rows else None

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        """Apply a ``PATCH`` (see the SQLite backend for the rules); returns the webhook
        as changed, read in the same transaction, or ``None`` when there is none."""
        now_ms = self._now_ms()

        async def work(connection: asyncpg.Connection) -> Webhook | None:
            found = await connection.fetchval(
                "SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id
            )
            if found is None:
                return None
            columns = changed_columns(changes, now_ms)
            assignments = ", ".join(
                f"{column} = ${number}" for number, column in enumerate(columns, start=2)
            )
            await connection.execute(
                f"UPDATE webhooks SET {assignments} WHERE id = $1",  # noqa: S608 - fixed names
                webhook_id,
                *columns.values(),
            )
            if changes.events is not None:
                await connection.execute(
                    "DELETE FROM webhook_events WHERE webhook_id = $1", webhook_id
                )
                await _add_subscriptions(connection, webhook_id, changes.events)
            if changes.auth_type == "signature":
                has_secret = await connection.fetchval(
                    "SELECT 1 FROM signing_secrets WHERE webhook_id = $1 AND expires_at_ms IS NULL",
                    webhook_id,
                )
                if has_secret is None:
                    await _add_secret(connection, webhook_id, now_ms)
            return await written_webhook(connection, webhook_id)

        return await self._write(work, notice=self._webhook_notice(webhook_id))

    async def rotate_secret(self, webhook_id: str, *, grace_ms: int) -> SigningSecret:
        """A new signing secret; the ones in force keep signing for ``grace_ms``."""
        now_ms = self._now_ms()
        secret = generate_secret()

        async def work(connection: asyncpg.Connection) -> None:
            # The webhook's row locked: two rotations at once queue, each gets its row.
            await connection.execute("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id)
            await connection.execute(
                "UPDATE signing_secrets SET expires_at_ms = $1 WHERE webhook_id = $2"
                " AND (expires_at_ms IS NULL OR expires_at_ms > $1)",
                now_ms + grace_ms,
                webhook_id,
            )
            latest = await connection.fetchval(
                "SELECT coalesce(max(created_at_ms), 0) FROM signing_secrets WHERE webhook_id = $1",
                webhook_id,
            )
            # A second rotation within a millisecond must still get its own row.
            await connection.execute(
                "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms)"
                " VALUES ($1, $2, $3)",
                webhook_id,
                secret,
                max(now_ms, latest + 1),
            )
            await connection.execute(
                "DELETE FROM signing_secrets WHERE webhook_id = $1 AND expires_at_ms <= $2",
                webhook_id,
                now_ms,
            )

        await self._write(work, notice=self._webhook_notice(webhook_id))
        return SigningSecret(secret=Secret(secret), created_at_ms=now_ms)

    async def replay(
        self,
        webhook_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since_ms: int | None = None,
        retained_since_ms: int,
        now_ms: int,
    ) -> int:
        """Queue retained events again for one webhook (by ids, or ingested since a
        time), of names it subscribes to; ones in a request being sent now are left
        alone. Returns how many deliveries were queued."""
        if event_ids is not None:
            selection = "e.event_id = ANY($3::text[])"
            parameter: object = list(event_ids)
        else:
            selection = "e.ingested_at_ms >= $3::bigint"
            parameter = since_ms or 0
        upsert = (
            "WITH queued AS (INSERT INTO deliveries"  # noqa: S608 - fixed SQL
            " (webhook_id, event_seq, state, due_at_ms, realtime)"
            " SELECT $1, e.seq, 'pending', $2, e.realtime FROM events AS e"
            f" WHERE {selection} AND e.ingested_at_ms >= $4 AND e.event_name IN"
            " (SELECT event_name FROM webhook_events WHERE webhook_id = $1)"
            " AND e.seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = $1)"
            " ON CONFLICT (webhook_id, event_seq) DO UPDATE SET state = 'pending',"
            " due_at_ms = excluded.due_at_ms, batch_id = NULL RETURNING event_seq),"
            f" rewound AS ({REWIND_FROM_SQL} SELECT $1, min(event_seq) FROM queued"
            f" HAVING count(*) > 0 {REWIND_CONFLICT_SQL})"
            " SELECT count(*) FROM queued"
        )

        async def work(connection: asyncpg.Connection) -> int:
            # Its row locked first, as ingest does: a deletion under way is waited for
            # and leaves nothing to queue, one after this deletes what it queued.
            if await connection.fetchval(LOCK_WEBHOOK_SQL, webhook_id) is None:
                return 0
            queued = await connection.fetchval(
                upsert, webhook_id, now_ms, parameter, retained_since_ms
            )
            return int(queued)

        return await self._write(work, notice=self._webhook_notice(webhook_id))

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryStatus | None, limit: int, after_seq: int
    ) -> list[DeliveryRecord]:
        rows = await self._fetch(DELIVERIES_SQL, webhook_id, after_seq, state, limit)
        return [delivery_record(row) for row in rows]

    async def attempts(
        self, webhook_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[AttemptRecord]:
        rows = await self._fetch(
            "SELECT id, batch_id, started_at_ms, duration_ms, event_count, status, error,"
            " response_body FROM attempts WHERE webhook_id = $1 AND id < $2"
            " ORDER BY id DESC LIMIT $3",
            webhook_id,
            before_id if before_id is not None else 2**63 - 1,
            limit,
        )
        return [attempt_record(row) for row in rows]

    async def backlog_summary(self, webhook_id: str) -> BacklogSummary:
        async with self._call():  # its two reads finish even if close() begins between
            return await self._backlog_summary(webhook_id)

    async def _backlog_summary(self, webhook_id: str) -> BacklogSummary:
        rows = await self._fetch(BACKLOG_SUMMARY_SQL, webhook_id)
        summary, first = backlog_counts(rows)
        if first is not None:
            found = await self._fetch("SELECT ingested_at_ms FROM events WHERE seq = $1", first)
            summary["oldest"] = int(found[0][0]) if found else None
        return summary

"""Webhooks, their signing secrets, replay, and the admin's view of their deliveries."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from typing import Final

from almhookd.config import Secret
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import (
    NewWebhook,
    SigningSecret,
    Webhook,
    WebhookChanges,
    WebhookStatus,
)
from almhookd.errors import (
    WebhookLimitReached,
)
from almhookd.storage.rows import (
    attempt_record,
    backlog_counts,
    changed_columns,
    delivery_record,
    webhook_from_row,
)
from almhookd.storage.sqlite.engine import SqliteEngine
from almhookd.storage.sqlite.queries import (
    SELECT_WEBHOOKS,
    event_key,
    written_webhook,
)
from almhookd.storage.values import AttemptRecord, BacklogSummary, DeliveryRecord, DeliveryStatus

#: A webhook's deliveries as the admin sees them (parameters: webhook id, after seq,
#: state or NULL, limit): the ``delivery_states`` view's rule, with the webhook's events
#: being sent read once (an ``IN`` list SQLite indexes once per query). Through the view,
#: or through a join with that set, they were walked again for every delivery: with
#: 20,000 pending and 32 batches being sent, a filter matching nothing took 0.7 to 1.2 s.
DELIVERIES_SQL: Final = (
    "WITH s AS MATERIALIZED (SELECT event_seq, batch_id FROM sending WHERE webhook_id = ?1)"
    " SELECT d.event_seq, e.event_id, e.event_name, e.ingested_at_ms, d.state,"
    " d.attempts, d.batch_id, d.delivered_at_ms, d.due_at_ms FROM (SELECT d.event_seq,"
    " d.attempts, d.delivered_at_ms, d.due_at_ms,"
    " CASE WHEN d.state = 'pending' AND d.event_seq IN (SELECT event_seq FROM s)"
    " THEN 'sending' ELSE d.state END AS state,"
    " coalesce(d.batch_id, CASE WHEN d.state = 'pending' THEN"
    " (SELECT s.batch_id FROM s WHERE s.event_seq = d.event_seq) END) AS batch_id"
    " FROM deliveries AS d WHERE d.webhook_id = ?1 AND d.event_seq > ?2) AS d"
    " JOIN events AS e ON e.seq = d.event_seq"
    " WHERE (?3 IS NULL OR d.state = ?3) ORDER BY d.event_seq LIMIT ?4"
)


#: A webhook's pending deliveries by kind (parameters: the webhook id, twice): released ones by
#: their event's kind, held ones (always of batch events), each with the lowest seq.
#: Index only: with 20,000 pending, joining each to its event took 9 to 10 ms.
BACKLOG_SUMMARY_SQL: Final = (
    "SELECT realtime, 0, count(*), min(event_seq) FROM deliveries INDEXED BY deliveries_ready"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NOT NULL GROUP BY realtime"
    " UNION ALL SELECT 0, 1, count(*), min(event_seq) FROM deliveries INDEXED BY deliveries_held"
    " WHERE webhook_id = ? AND state = 'pending' AND due_at_ms IS NULL"
)


class WebhookOps(SqliteEngine):
    """The webhooks' side of the backend: every change one durable transaction."""

    async def create_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        """Store a webhook; a ``signature`` webhook gets its first signing secret.

        With ``max_webhooks``, raises :class:`WebhookLimitReached` when that many exist.
        The count is taken inside the transaction that inserts (the write lock held), so
        parallel creates cannot all pass it. The webhook returned is read in that same
        transaction.
        """
        webhook_id = "wh_" + secrets.token_hex(8)
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> Webhook:
            if max_webhooks is not None:
                existing = db.execute("SELECT count(*) FROM webhooks").fetchone()[0]
                if existing >= max_webhooks:
                    raise WebhookLimitReached(max_webhooks)
            db.execute(
                "INSERT INTO webhooks (id, name, description, target_url, auth_type,"
                " auth_username, auth_password, contact_email, status, created_at_ms,"
                " updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
                    now_ms,
                ),
            )
            db.executemany(
                "INSERT INTO webhook_events (event_name, webhook_id) VALUES (?, ?)",
                [(name, webhook_id) for name in sorted(new.events)],
            )
            if new.auth_type == "signature":
                db.execute(
                    "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms)"
                    " VALUES (?, ?, ?)",
                    (webhook_id, generate_secret(), now_ms),
                )
            return written_webhook(db, webhook_id)

        return await self._write(work, durable=True)

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first: one statement, so one snapshot of all of them."""
        rows = await self._fetchall(SELECT_WEBHOOKS + " ORDER BY w.created_at_ms, w.id")
        return [webhook_from_row(row) for row in rows]

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = await self._fetchall(SELECT_WEBHOOKS + " WHERE w.id = ?", (webhook_id,))
        return webhook_from_row(rows[0]) if rows else None

    async def set_webhook_status(
        self, webhook_id: str, status: WebhookStatus, reason: str | None = None
    ) -> None:
        """Archive (``inactive``), disable (``disabled``, with a reason) or re-enable.

        Re-enabling clears the failure schedule, so delivery resumes at once.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhooks SET status = ?, disabled_reason = ?, updated_at_ms = ?"
                " WHERE id = ?",
                (status, reason, now_ms, webhook_id),
            )
            if status == "active":
                db.execute(
                    "UPDATE webhooks SET consecutive_failures = 0, failing_since_ms = NULL,"
                    " next_attempt_at_ms = NULL, last_reminder_at_ms = NULL WHERE id = ?",
                    (webhook_id,),
                )

        await self._write(work, durable=True)

    async def delete_webhook(self, webhook_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount > 0

        return await self._write(work, durable=True)

    async def count_webhooks(self) -> int:
        rows = await self._fetchall("SELECT count(*) FROM webhooks")
        return int(rows[0][0])

    async def name_taken(self, name: str, *, except_id: str | None = None) -> str | None:
        """The id of another webhook with this name, if any."""
        rows = await self._fetchall(
            "SELECT id FROM webhooks WHERE name = ? AND id != ?", (name, except_id or "")
        )
        return str(rows[0][0]) if rows else None

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        """Apply a ``PATCH``; returns the webhook as changed (read in the same
        transaction), or ``None`` when there is no such webhook.

        ``active: false`` archives (``inactive``); ``active: true`` re-enables an archived
        or disabled webhook and clears its failure schedule. Switching to signature auth
        makes a secret when the webhook has none.
        """
        now_ms = self._now_ms()

        def work(db: sqlite3.Connection) -> Webhook | None:
            if db.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone() is None:
                return None
            columns = changed_columns(changes, now_ms)
            assignments = ", ".join(f"{column} = ?" for column in columns)
            db.execute(
                f"UPDATE webhooks SET {assignments} WHERE id = ?",  # noqa: S608 - fixed names
                [*columns.values(), webhook_id],
            )
            if changes.events is not None:
                db.execute("DELETE FROM webhook_events WHERE webhook_id = ?", (webhook_id,))
                db.executemany(
                    "INSERT INTO webhook_events (event_name, webhook_id) VALUES (?, ?)",
                    [(name, webhook_id) for name in sorted(changes.events)],
                )
            if changes.auth_type == "signature":
                has_secret = db.execute(
                    "SELECT 1 FROM signing_secrets WHERE webhook_id = ? AND expires_at_ms IS NULL",
                    (webhook_id,),
                ).fetchone()
                if has_secret is None:
                    db.execute(
                        "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms)"
                        " VALUES (?, ?, ?)",
                        (webhook_id, generate_secret(), now_ms),
                    )
            return written_webhook(db, webhook_id)

        return await self._write(work, durable=True)

    async def rotate_secret(self, webhook_id: str, *, grace_ms: int) -> SigningSecret:
        """A new signing secret; the ones in force keep signing for ``grace_ms``."""
        now_ms = self._now_ms()
        secret = generate_secret()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE signing_secrets SET expires_at_ms = ? WHERE webhook_id = ?"
                " AND (expires_at_ms IS NULL OR expires_at_ms > ?)",
                (now_ms + grace_ms, webhook_id, now_ms + grace_ms),
            )
            # A second rotation within a millisecond must still get its own row.
            created = max(
                now_ms,
                1
                + (
                    db.execute(
                        "SELECT coalesce(max(created_at_ms), 0) FROM signing_secrets"
                        " WHERE webhook_id = ?",
                        (webhook_id,),
                    ).fetchone()[0]
                ),
            )
            db.execute(
                "INSERT INTO signing_secrets (webhook_id, secret, created_at_ms) VALUES (?, ?, ?)",
                (webhook_id, secret, created),
            )
            db.execute(
                "DELETE FROM signing_secrets WHERE webhook_id = ? AND expires_at_ms <= ?",
                (webhook_id, now_ms),
            )

        await self._write(work, durable=True)
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
        """Queue retained events again for one webhook (by ids, or ingested since a time).

        Events of names the webhook subscribes to only; ones in a request being sent now
        are left alone. Returns how many deliveries were queued.
        """
        if event_ids is not None:
            selection = (
                "SELECT e.seq, e.realtime FROM events AS e WHERE e.event_key IN"
                " (SELECT value FROM json_each(?)) AND e.event_id IN"
                " (SELECT value FROM json_each(?))"
            )
            parameters: list[object] = [
                json.dumps([event_key(i) for i in event_ids]),
                json.dumps(list(event_ids)),
            ]
        else:
            selection = "SELECT e.seq, e.realtime FROM events AS e WHERE e.ingested_at_ms >= ?"
            parameters = [since_ms or 0]
        subscribed = (
            " AND e.ingested_at_ms >= ? AND e.event_name IN"
            " (SELECT event_name FROM webhook_events WHERE webhook_id = ?)"
        )

        # One statement for every event: a delivery row that exists is queued again
        # (unless its event is in a request being sent now), a missing one is inserted.
        # The WHERE clause also tells SQLite's parser that ON CONFLICT is the upsert's,
        # not a join constraint.
        upsert = (
            "INSERT INTO deliveries (webhook_id, event_seq, state, due_at_ms, realtime)"  # noqa: S608 - fixed SQL
            f" SELECT ?, e.seq, 'pending', ?, e.realtime FROM ({selection + subscribed}) AS e"
            " WHERE e.seq NOT IN (SELECT event_seq FROM sending WHERE webhook_id = ?)"
            " ON CONFLICT (webhook_id, event_seq) DO UPDATE SET state = 'pending',"
            " due_at_ms = excluded.due_at_ms, batch_id = NULL"
        )

        def work(db: sqlite3.Connection) -> int:
            return int(
                db.execute(
                    upsert,
                    [
                        webhook_id,
                        now_ms,
                        *parameters,
                        retained_since_ms,
                        webhook_id,
                        webhook_id,
                    ],
                ).rowcount
            )

        return await self._write(work, durable=True)

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryStatus | None, limit: int, after_seq: int
    ) -> list[DeliveryRecord]:
        """Per-event delivery state in ingest order, after the cursor ``after_seq``."""
        rows = await self._fetchall(DELIVERIES_SQL, (webhook_id, after_seq, state, limit))
        return [delivery_record(row) for row in rows]

    async def attempts(
        self, webhook_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[AttemptRecord]:
        """The request log, newest first, before the cursor ``before_id``."""
        rows = await self._fetchall(
            "SELECT id, batch_id, started_at_ms, duration_ms, event_count, status, error,"
            " response_body FROM attempts WHERE webhook_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (webhook_id, before_id if before_id is not None else 2**63 - 1, limit),
        )
        return [attempt_record(row) for row in rows]

    async def backlog_summary(self, webhook_id: str) -> BacklogSummary:
        """Outstanding deliveries of a webhook: real-time, batch (held or released), and
        the ingest time of the first in ingest order. Counted in the two indexes of
        pending deliveries alone (:data:`BACKLOG_SUMMARY_SQL`), then one event read."""
        rows = await self._fetchall(BACKLOG_SUMMARY_SQL, (webhook_id, webhook_id))
        summary, first = backlog_counts(rows)
        if first is not None:
            found = await self._fetchall(
                "SELECT ingested_at_ms FROM events WHERE seq = ?", (first,)
            )
            summary["oldest"] = int(found[0][0]) if found else None
        return summary

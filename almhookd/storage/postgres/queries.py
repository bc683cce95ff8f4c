"""The SQL the PostgreSQL backend shares between its parts, and rows → values."""

from __future__ import annotations

from typing import Final

import asyncpg

from almhookd.domain.webhooks import Webhook
from almhookd.storage.rows import webhook_from_row

#: Webhooks with their subscriptions and signing secrets as JSON arrays: one statement,
#: so one snapshot.
SELECT_WEBHOOKS: Final = (
    "SELECT w.id, w.name, w.description, w.target_url, w.auth_type, w.auth_username,"
    " w.auth_password, w.contact_email, w.status, w.disabled_reason, w.created_at_ms,"
    " w.updated_at_ms, w.consecutive_failures, w.failing_since_ms, w.next_attempt_at_ms,"
    " w.last_success_at_ms, w.last_error, w.last_reminder_at_ms,"
    " coalesce((SELECT json_agg(e.event_name) FROM webhook_events AS e"
    " WHERE e.webhook_id = w.id), '[]')::text,"
    " coalesce((SELECT json_agg(json_build_array(s.secret, s.created_at_ms, s.expires_at_ms))"
    " FROM signing_secrets AS s WHERE s.webhook_id = w.id), '[]')::text"
    " FROM webhooks AS w"
)


async def written_webhook(connection: asyncpg.Connection, webhook_id: str) -> Webhook:
    """The webhook as the transaction that changed it left it (read in it)."""
    row = await connection.fetchrow(SELECT_WEBHOOKS + " WHERE w.id = $1", webhook_id)
    return webhook_from_row(row)


#: A rewind of claim cursors (``claim_cursors``, migration 3): deliveries of a webhook
#: from a seq on were made due again (a replay, the batch flush, a dissolved batch, a
#: new owner), so its next claim looks from there around the batches being sent. Fed
#: by a SELECT of (webhook id, seq) rows; the least seq wins.
REWIND_FROM_SQL: Final = "INSERT INTO claim_cursors AS c (webhook_id, rewound_from)"
REWIND_CONFLICT_SQL: Final = (
    " ON CONFLICT (webhook_id) DO UPDATE"
    " SET rewound_from = least(c.rewound_from, excluded.rewound_from)"
)
#: The same for webhook $1 from seq $2 (none if the webhook is gone).
REWIND_SQL: Final = (
    f"{REWIND_FROM_SQL} SELECT id, $2::bigint FROM webhooks"  # noqa: S608 - constants
    f" WHERE id = $1{REWIND_CONFLICT_SQL}"
)

#: ``pg_advisory_xact_lock`` key of the writes that lock deliveries of many webhooks and
#: then their claim cursors (the batch flush and expiry: their rewinds), and of a
#: webhook's deletion, which locks its cursor before its deliveries: one at a time,
#: never a deadlock ("sweep" in ASCII).
SWEEP_LOCK: Final = int.from_bytes(b"sweep", "big")
#: ... taken, until the transaction ends.
SWEEP_LOCK_SQL: Final = f"SELECT pg_advisory_xact_lock({SWEEP_LOCK})"
